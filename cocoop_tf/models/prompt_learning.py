"""What CoOp and CoCoOp share: learned context vectors before each class name."""

import numbers
import warnings

from cocoop_tf.clip.backbone import word_embeddings
from cocoop_tf.clip.prompts import check_text_length
from cocoop_tf.clip.prompts import clean_classnames
from cocoop_tf.clip.prompts import shown
from cocoop_tf.clip.prompts import tokenize_classnames
from cocoop_tf.layers.prompt_learner import PromptLearner
from cocoop_tf.models.clip_classifier import CLIPClassifier


def check_n_ctx(n_ctx, context_length):
    """`n_ctx` as an int, if it is a count of context vectors that fits the context.

    Beside the context, a prompt holds the start token, at least one token
    of the class name and the end token.
    """
    most = context_length - 3
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, numbers.Integral) or not 1 <= n_ctx <= most:
        raise ValueError(
            f"n_ctx (--n-ctx) must be a whole number of context vectors from 1 to {most} (the text "
            f"encoder's context of {context_length} tokens also holds the start token, the class "
            f"name and the end token), got {shown(n_ctx)}; or give ctx_init words instead."
        )
    return int(n_ctx)


def check_ctx_init(ctx_init, context_length):
    """`ctx_init` with single spaces, or None for none; text that cannot fit the context is refused."""
    if ctx_init is None or ctx_init == "":
        return None
    if not isinstance(ctx_init, str):
        raise ValueError(f"ctx_init (--ctx-init) must be words or none, got {shown(ctx_init)}.")
    check_text_length(ctx_init, context_length, f"ctx_init (--ctx-init) {shown(ctx_init)}")
    return " ".join(ctx_init.split()) or None


class PromptLearningModel(CLIPClassifier):
    """Base of `CoOp` and `CoCoOp`; not used directly.

    The prompt of class `c` is `[SOS][v_1..v_M][tokens of "{name}."][EOS]`,
    the reference implementation's `"{ctx words} {name}."` with the context
    words' embeddings replaced by learned vectors. With
    `ctx_init` (e.g. "a photo of a") the number of context vectors is its
    number of words and they start as those words' token embeddings; without
    it they are `n_ctx` draws from N(0, 0.02). The backbone stays frozen.

    Train with `compile(optimizer=cocoop_tf.paper_optimizer(...))` and `fit`.
    Subclasses build their own layers, then call `set_classnames` last.
    """

    run_settings = ("n_ctx", "ctx_init")

    @classmethod
    def check_run_settings(cls, settings):
        ctx_init, n_ctx = settings.get("ctx_init"), settings.get("n_ctx")
        if ctx_init:
            words = len(ctx_init.split())
            if n_ctx not in (None, words):
                raise ValueError(
                    f"ctx_init {ctx_init!r} has {words} words but n_ctx is {n_ctx}; "
                    f"set n_ctx to {words}, or ctx_init to none for random context vectors."
                )
        elif not n_ctx:
            raise ValueError("Without ctx_init, give the number of context vectors n_ctx >= 1.")

    def __init__(self, clip, classnames, n_ctx=4, ctx_init="a photo of a", class_specific=False, **kwargs):
        super().__init__(clip, **kwargs)
        context_length = clip.text_encoder.max_sequence_length
        ctx_init = check_ctx_init(ctx_init, context_length)
        if n_ctx is not None or not ctx_init:
            n_ctx = check_n_ctx(n_ctx, context_length)
        if class_specific not in (True, False):
            raise ValueError(f"class_specific (--class-specific) must be True or False, got {shown(class_specific)}.")
        if ctx_init:
            words = ctx_init.split()
            if n_ctx is not None and n_ctx != len(words):
                raise ValueError(
                    f"ctx_init {ctx_init!r} has {len(words)} words but n_ctx={n_ctx}; "
                    f"pass n_ctx={len(words)} (or None), or ctx_init=None for "
                    f"{n_ctx} random context vectors."
                )
            n_ctx = check_n_ctx(len(words), context_length)
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init or None
        self.class_specific = bool(class_specific)
        self.prompt_learner = PromptLearner(
            n_ctx,
            clip.text_encoder.embedding_dim,
            num_classes=len(clean_classnames(classnames)) if class_specific else None,
            dtype=clip.dtype_policy,
            name="prompt_learner",
        )
        if ctx_init:
            embedded = word_embeddings(clip, ctx_init)
            if len(embedded) != n_ctx:
                warnings.warn(
                    f"ctx_init {ctx_init!r} is {len(embedded)} tokens for {n_ctx} words; "
                    f"the context starts as the first {n_ctx} token embeddings."
                )
            self.prompt_learner.set_context(embedded[:n_ctx])

    @classmethod
    def check_prompt_config(cls, config, shapes):
        ctx = shapes.get("prompt_learner/ctx")
        if ctx is None:
            return  # load_prompt names the weights the file lacks
        class_specific = config.get("class_specific", False) is True
        if len(ctx) != (3 if class_specific else 2):
            kind = "one context per class" if class_specific else "one shared context"
            raise ValueError(f"its context prompt_learner/ctx has shape {ctx}, not that of {kind}.")
        if class_specific and ctx[0] != len(config["classnames"]):
            raise ValueError(
                f"it learned one context per class for {ctx[0]} classes but names "
                f"{len(config['classnames'])} classes."
            )
        n_ctx = config.get("n_ctx")
        if n_ctx is not None and (type(n_ctx) is not int or n_ctx != ctx[-2]):
            raise ValueError(
                f"its config says n_ctx={shown(n_ctx)} but its context prompt_learner/ctx holds "
                f"{ctx[-2]} vectors (n_ctx={ctx[-2]})."
            )

    # --- classes ---------------------------------------------------------------

    def set_classnames(self, classnames, force=False):
        classnames = clean_classnames(classnames)
        if self.class_specific and len(classnames) != self.prompt_learner.num_classes:
            raise ValueError(
                f"This model learned one context per class for {self.prompt_learner.num_classes} "
                f"classes; it cannot serve {len(classnames)} classes. Use a shared "
                "context (class_specific=False) to transfer to new classes."
            )
        super().set_classnames(classnames, force=force)

    @property
    def classes_fixed(self):
        return self.class_specific

    def export_description(self):
        return {"prompt": "{}.", "n_ctx": self.n_ctx, "class_specific": self.class_specific}

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

    # --- serialisation -------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update({"n_ctx": self.n_ctx, "ctx_init": self.ctx_init})
        return config

