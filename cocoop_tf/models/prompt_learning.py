"""What CoOp and CoCoOp share: prompts, class swaps, training steps, prompt files."""

import json
import warnings

import numpy as np

from cocoop_tf.clip.backbone import fingerprint
from cocoop_tf.clip.prompts import clean_classnames
from cocoop_tf.clip.prompts import tokenize_classnames
from cocoop_tf.clip.tokenizer import encode
from cocoop_tf.files import save_safetensors
from cocoop_tf.layers.prompt_learner import PromptLearner
from cocoop_tf.models.clip_classifier import CLIPClassifier

PROMPT_FORMAT = "cocoop_tf.prompt/1"
# Learned context vectors sit near token embeddings (about 0.01-1); anything
# this large only comes from a damaged file or a diverged run.
MAX_PROMPT_VALUE = 1e6


class PromptLearningModel(CLIPClassifier):
    """Base of `CoOp` and `CoCoOp`; not used directly.

    The prompt of class `c` is `[SOS][v_1..v_M][tokens of "{name}."][EOS]`,
    the reference implementation's `"{ctx words} {name}."` with the context
    words' embeddings replaced by learned vectors. With
    `ctx_init` (e.g. "a photo of a") the number of context vectors is its
    number of words and they start as those words' token embeddings; without
    it they are `n_ctx` draws from N(0, 0.02). The backbone stays frozen.

    Train with `compile(optimizer=cocoop_tf.paper_optimizer(...))` and `fit`.
    """

    def __init__(self, clip, classnames, n_ctx=4, ctx_init="a photo of a", class_specific=False, **kwargs):
        super().__init__(clip, **kwargs)
        if ctx_init:
            words = ctx_init.split()
            if n_ctx is not None and n_ctx != len(words):
                raise ValueError(
                    f"ctx_init {ctx_init!r} has {len(words)} words but n_ctx={n_ctx}; "
                    f"pass n_ctx={len(words)} (or None), or ctx_init=None for "
                    f"{n_ctx} random context vectors."
                )
            n_ctx = len(words)
            ctx_init = " ".join(words)
        elif not n_ctx:
            raise ValueError("Give ctx_init words or a number of context vectors n_ctx.")
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init or None
        self.class_specific = bool(class_specific)
        self.set_classnames(classnames)
        self.prompt_learner = PromptLearner(
            n_ctx,
            clip.text_encoder.embedding_dim,
            num_classes=len(self.classnames) if class_specific else None,
            name="prompt_learner",
        )
        if ctx_init:
            ids = encode(ctx_init)
            if len(ids) != n_ctx:
                warnings.warn(
                    f"ctx_init {ctx_init!r} is {len(ids)} tokens for {n_ctx} words; "
                    f"the context starts as the first {n_ctx} token embeddings."
                )
            embedded = clip.text_encoder.embedding.token_embedding(np.array(ids[:n_ctx]))
            self.prompt_learner.set_context(embedded)

    # --- classes ---------------------------------------------------------------

    def set_classnames(self, classnames, force=False):
        classnames = clean_classnames(classnames)
        if self.class_specific and hasattr(self, "classnames") and len(classnames) != len(self.classnames):
            raise ValueError(
                f"This model learned one context per class for {len(self.classnames)} "
                f"classes; it cannot serve {len(classnames)} classes. Use a shared "
                "context (class_specific=False) to transfer to new classes."
            )
        super().set_classnames(classnames, force=force)

    def tokenize_classnames(self, classnames):
        """The `class_token_ids` this model (and its exported graph) takes.

        Args:
            classnames: list of class names.

        Returns:
            int32 array `[num_classes, context_length]`, see
            `cocoop_tf.tokenize_classnames`.
        """
        context_length = self.clip.text_encoder.max_sequence_length
        return tokenize_classnames(classnames, context_length, self.n_ctx)

    # --- prompt checkpoints --------------------------------------------------------

    def _prompt_metadata(self, training=None):
        metadata = {
            "format": PROMPT_FORMAT,
            "method": type(self).__name__,
            "n_ctx": str(self.n_ctx),
            "ctx_dim": str(self.clip.text_encoder.embedding_dim),
            "vis_dim": str(self.clip.projection_dim),
            "class_specific": str(self.class_specific),
            "ctx_init": self.ctx_init or "",
            "classnames": json.dumps(self.classnames),
            "backbone": self.backbone_fingerprint,
        }
        if training is not None:
            metadata["training"] = json.dumps(training)
        return metadata

    @property
    def backbone_fingerprint(self):
        """`cocoop_tf.clip.backbone.fingerprint` of the frozen backbone, computed once."""
        if getattr(self, "_backbone_fingerprint", None) is None:
            self._backbone_fingerprint = fingerprint(self.clip)
        return self._backbone_fingerprint

    def save_prompt(self, path, training=None):
        """Writes only the learned weights (context, Meta-Net) to a safetensors file.

        About 140 KB for ViT-B/16; apply it to a separately loaded backbone
        with `load_prompt` or `from_prompt`. The file also records the
        model's settings and class names, a fingerprint of the backbone's
        weights (a prompt means nothing on another CLIP), and optionally how
        it was trained. It is written whole or not at all.

        Args:
            path: output file, conventionally `*.safetensors`.
            training: optional JSON-able dict of the training settings
                (dataset, shots, seed, epochs, ...), read back by
                `read_prompt` and reported when the prompt is evaluated.
        """
        tensors = {v.path: np.asarray(v) for v in self.trainable_weights}
        save_safetensors(path, tensors, metadata=self._prompt_metadata(training))

    def load_prompt(self, path, force=False):
        """Loads learned weights written by `save_prompt` into this model.

        Args:
            path: a prompt checkpoint file.
            force: load a prompt trained on a backbone with other weights
                (same widths) anyway, with a warning; by default refused.

        Raises:
            ValueError: the file was made for another method, context size,
                backbone width, or (without `force`) another backbone.
        """
        tensors, metadata = read_prompt(path)
        mine = self._prompt_metadata()
        for key in ("method", "n_ctx", "ctx_dim", "vis_dim", "class_specific"):
            if metadata.get(key) != mine[key]:
                raise ValueError(
                    f"Prompt checkpoint {str(path)!r} does not fit this model: its "
                    f"{key} is {metadata.get(key)} but this model's is {mine[key]}. "
                    "Load it into a model built the same way, on a backbone of the "
                    "same widths."
                )
        trained_on = metadata.get("backbone")
        if trained_on != mine["backbone"]:
            problem = (
                f"Prompt checkpoint {str(path)!r} was trained on another backbone (weights "
                f"fingerprint {trained_on}; this backbone's is {mine['backbone']}), and its "
                "context means nothing on other weights"
                if trained_on else
                f"Prompt checkpoint {str(path)!r} does not record the backbone it was trained on"
            )
            if not force:
                raise ValueError(
                    f"{problem}. Load the backbone it was trained on, or pass force=True "
                    "(--force on the command line) to load it anyway."
                )
            warnings.warn(f"{problem}; loading it anyway (force).", stacklevel=2)
        variables = {v.path: v for v in self.trainable_weights}
        if set(variables) != set(tensors):
            raise ValueError(
                f"Prompt checkpoint {str(path)!r} holds {sorted(tensors)}, this model "
                f"learns {sorted(variables)}."
            )
        for name, value in tensors.items():
            if not np.isfinite(value).all() or np.abs(value).max(initial=0) > MAX_PROMPT_VALUE:
                raise ValueError(
                    f"Prompt checkpoint {str(path)!r}: {name} holds NaN, infinite or absurd values "
                    f"(largest magnitude {np.nanmax(np.abs(value), initial=0):g}; training leaves "
                    f"them far below {MAX_PROMPT_VALUE:g}). The file is damaged or came from a run "
                    "that diverged; use an earlier epoch's checkpoint or train again."
                )
        for name, value in tensors.items():
            if tuple(value.shape) != tuple(variables[name].shape):
                raise ValueError(
                    f"Prompt checkpoint {str(path)!r}: {name} has shape {value.shape}, "
                    f"this model needs {tuple(variables[name].shape)}."
                )
            variables[name].assign(value)

    @classmethod
    def from_prompt(cls, clip, path, classnames=None, force=False, **kwargs):
        """Builds the model on `clip` with the learned weights of a prompt file.

        Args:
            clip: the backbone the prompt was trained on.
            path: a prompt checkpoint written by `save_prompt`.
            classnames: the classes to classify; default the training classes.
            force: see `load_prompt`.
            **kwargs: further constructor arguments (e.g. `reduction`).
        """
        _, metadata = read_prompt(path)
        if metadata.get("method") != cls.__name__:
            raise ValueError(
                f"{str(path)!r} is a {metadata.get('method')} prompt, not {cls.__name__}; "
                f"use {metadata.get('method')}.from_prompt."
            )
        model = cls(
            clip,
            classnames or metadata["classnames"],
            n_ctx=int(metadata["n_ctx"]),
            ctx_init=metadata["ctx_init"] or None,
            **cls._constructor_options(metadata),
            **kwargs,
        )
        model.load_prompt(path, force=force)
        return model

    @classmethod
    def _constructor_options(cls, metadata):
        return {}

    # --- serialisation -------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update({"n_ctx": self.n_ctx, "ctx_init": self.ctx_init})
        return config


REQUIRED_METADATA = ("method", "n_ctx", "ctx_dim", "vis_dim", "class_specific", "ctx_init", "classnames")


def read_prompt(path):
    """Reads a prompt checkpoint: (tensors by variable path, metadata).

    In the metadata returned, "classnames" is a list and "training" (when
    the file records it) a dict; every other value is the stored string.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except FileNotFoundError:
        raise FileNotFoundError(f"Prompt checkpoint not found: {str(path)!r}.") from None
    except Exception as error:
        raise ValueError(f"{str(path)!r} is not a readable prompt checkpoint: {error}") from None
    if metadata.get("format") != PROMPT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a cocoop-tf prompt checkpoint.")
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(
            f"Prompt checkpoint {str(path)!r} lacks {', '.join(missing)} in its metadata; "
            "it was not written by save_prompt. Train it again, or write it with save_prompt."
        )
    metadata = dict(metadata)
    for key in ("classnames", "training"):
        if key in metadata:
            try:
                metadata[key] = json.loads(metadata[key])
            except json.JSONDecodeError:
                raise ValueError(
                    f"Prompt checkpoint {str(path)!r}: its {key!r} metadata is not valid JSON."
                ) from None
    return tensors, metadata
