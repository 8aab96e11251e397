"""MaPLe: coupled language and vision prompts in the first J blocks of both towers."""

import numbers

from cocoop_tf.clip.backbone import word_embeddings
from cocoop_tf.clip.prompts import clean_classnames
from cocoop_tf.clip.prompts import shown
from cocoop_tf.clip.prompts import tokenize_prompts
from cocoop_tf.clip.tokenizer import encode
from cocoop_tf.layers.multimodal_prompt_learner import MultiModalPromptLearner
from cocoop_tf.models.clip_classifier import CLIPClassifier
from cocoop_tf.models.clip_classifier import l2_normalize
from cocoop_tf.models.prompt_learning import check_ctx_init
from cocoop_tf.models.prompt_learning import check_n_ctx
from cocoop_tf.models.registry import register_method


@register_method
class MaPLe(CLIPClassifier):
    """MaPLe (Khattak et al., CVPR 2023): multi-modal prompt learning.

    The prompt of class `i` is `[SOS][v_1..v_M][fixed words][name tokens .][EOS]`:
    with `ctx_init` "a photo of a" and `M = 2`, the context starts as the
    embeddings of "a photo" and "of a" stays as words, as in the official
    implementation. Blocks 1..J-1 of the text tower take their own learned
    prompts at the context positions (`MultiModalPromptLearner`), and the
    vision tower takes the coupled vision prompts: appended to the patch
    sequence before its first block and replaced before each of blocks
    1..J-1. The backbone stays frozen. Prompts do not depend on the image:
    class features are computed once per batch (`class_features`), the
    image features depend on the learned prompts (`encode_images`).

    Takes RGB images as pixel values 0..255, `[B, S, S, 3]`; returns logits
    `[B, num_classes]`.

    Args:
        clip: a frozen `keras_hub.models.CLIPBackbone` (see `load_clip`).
        classnames: list of class names; underscores become spaces.
        n_ctx: prompt vectors per block, M (the paper's 2).
        ctx_init: words whose first `n_ctx` tokens start the context; the
            other words stay in the prompt as text. None: N(0, 0.02) vectors.
        prompt_depth: blocks of each tower that take prompts, J (the
            paper's 9; 1 for prompts in the first block only).
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    model = cocoop_tf.MaPLe(clip, ["cat", "dog"], prompt_depth=2)
    logits = model(np.zeros((2, 32, 32, 3), "float32"))  # [2, 2]
    ```
    """

    method = "maple"
    display_name = "MaPLe"
    runs_by_default = False
    # The official base-to-new recipe (vit_b16_c2_ep5_batch4_2ctx).
    paper_settings = {"epochs": 5, "batch_size": 4, "lr": 0.0035, "n_ctx": 2, "prompt_depth": 9}
    run_settings = ("n_ctx", "ctx_init", "prompt_depth")

    @classmethod
    def check_run_settings(cls, settings):
        if settings.get("ctx_init"):
            fixed_words(settings["ctx_init"], settings["n_ctx"])

    def __init__(self, clip, classnames, n_ctx=2, ctx_init="a photo of a", prompt_depth=9, **kwargs):
        super().__init__(clip, **kwargs)
        context_length = clip.text_encoder.max_sequence_length
        self.n_ctx = check_n_ctx(n_ctx, context_length)
        self.ctx_init = check_ctx_init(ctx_init, context_length)
        self.prompt_depth = self._checked_depths(prompt_depth)
        self.fixed_words = fixed_words(self.ctx_init, self.n_ctx) if self.ctx_init else ""
        self.prompt_learner = self._make_prompt_learner()
        if self.ctx_init:
            self.prompt_learner.set_context(word_embeddings(clip, self.ctx_init)[: self.n_ctx])
        self.set_classnames(classnames)

    def _checked_depths(self, prompt_depth):
        """`prompt_depth` as an int, if both towers have that many blocks (a subclass checks its own)."""
        text_blocks, vision_blocks = tower_blocks(self.clip)
        blocks = min(text_blocks, vision_blocks)
        if not is_whole(prompt_depth) or not 1 <= prompt_depth <= blocks:
            raise ValueError(
                f"prompt_depth is {shown(prompt_depth)}, but this backbone's towers have {text_blocks} text "
                f"and {vision_blocks} vision blocks: set prompt_depth (--prompt-depth) between 1 and {blocks}."
            )
        return int(prompt_depth)

    def _make_prompt_learner(self):
        """The layer that holds the prompts (a subclass makes its own); called once the settings are checked."""
        return MultiModalPromptLearner(
            self.n_ctx,
            self.clip.text_encoder.embedding_dim,
            self.clip.vision_encoder.hidden_dim,
            depth=self.prompt_depth,
            dtype=self.clip.dtype_policy,
            name="prompt_learner",
        )

    @classmethod
    def check_prompt_config(cls, config, shapes):
        ctx, n_ctx = shapes.get("prompt_learner/ctx"), config.get("n_ctx")
        if ctx is not None and (len(ctx) != 2 or type(n_ctx) is not int or ctx[0] != n_ctx):
            raise ValueError(
                f"its config says n_ctx={shown(n_ctx)} but its context prompt_learner/ctx has shape {ctx}."
            )

    # --- classes ---------------------------------------------------------------

    def tokenize_classnames(self, classnames):
        """The `class_token_ids` this model (and its export) takes: `"{fixed words} {name}."`."""
        names = clean_classnames(classnames)
        context_length = self.clip.text_encoder.max_sequence_length
        texts = [self.export_description()["prompt"].format(name) for name in names]
        return tokenize_prompts(texts, names, context_length, self.n_ctx)

    def export_description(self):
        prompt = f"{self.fixed_words} {{}}." if self.fixed_words else "{}."
        return {"prompt": prompt, "n_ctx": self.n_ctx, "class_specific": False}

    # --- features and logits -----------------------------------------------------

    def encode_images(self, images):
        """Normalised image features `[B, projection_dim]`, with the learned vision prompts."""
        _, _, vision, deep_vision = self.prompt_learner()
        return self.image_encoder(images, vision, deep_vision)

    def class_features(self, token_ids):
        """Normalised class features `[C, projection_dim]` of class token ids `[C, L]`."""
        context, deep, _, _ = self.prompt_learner()
        return l2_normalize(self.prompt_text_encoder(context, token_ids, deep)[0])

    def get_config(self):
        config = super().get_config()
        config.update({"n_ctx": self.n_ctx, "ctx_init": self.ctx_init, "prompt_depth": self.prompt_depth})
        return config


def tower_blocks(clip):
    """The numbers of blocks of the backbone's text and vision towers."""
    return len(clip.text_encoder.encoder_layers), len(clip.vision_encoder.encoder_layers)


def is_whole(value):
    """True for an integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def fixed_words(ctx_init, n_ctx):
    """The words of `ctx_init` after its first `n_ctx` tokens, which stay text in MaPLe's prompt.

    Raises:
        ValueError: `ctx_init` has fewer tokens than `n_ctx`, or its
            `n_ctx`-th token ends inside a word.
    """
    words = ctx_init.split()
    tokens = 0
    for i, word in enumerate(words):
        if tokens == n_ctx:
            return " ".join(words[i:])
        tokens += len(encode(word))
        if tokens > n_ctx:
            break
    if tokens == n_ctx:
        return ""
    raise ValueError(
        f"ctx_init {ctx_init!r} cannot start {n_ctx} context vectors: its first {n_ctx} tokens "
        f"must be whole words ({len(encode(ctx_init))} tokens in all). Give n_ctx up to its "
        "number of words, or ctx_init=None for random context vectors."
    )
