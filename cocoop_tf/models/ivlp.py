"""IVLP: language and vision prompts learned independently, in the first blocks of each tower."""

from cocoop_tf.clip.prompts import shown
from cocoop_tf.layers.independent_prompt_learner import IndependentPromptLearner
from cocoop_tf.models.maple import MaPLe
from cocoop_tf.models.maple import is_whole
from cocoop_tf.models.maple import tower_blocks
from cocoop_tf.models.registry import register_method


@register_method
class IVLP(MaPLe):
    """IVLP (Khattak et al., CVPR 2023): independent vision-language prompting.

    MaPLe's baseline and PromptSRC's prompts. The text prompt of class `i` is
    MaPLe's, `[SOS][v_1..v_M][fixed words][name tokens .][EOS]` (with
    `ctx_init` "a photo of a" and `M = 4` the whole phrase is learned), and
    text blocks 1..J-1 take their own learned prompts at the context
    positions. The vision tower takes its own learned prompts, as in VPT:
    `M_v` vectors appended after the class and patch embeddings, replaced by
    new ones before each of vision blocks 1..J_v-1. Nothing couples the two
    towers (`IndependentPromptLearner`); their depths and prompt counts are
    set apart. The backbone stays frozen; class features do not depend on the
    image, as MaPLe's.

    Takes RGB images as pixel values 0..255, `[B, S, S, 3]`; returns logits
    `[B, num_classes]`.

    Args:
        clip: a frozen `keras_hub.models.CLIPBackbone` (see `load_clip`).
        classnames: list of class names; underscores become spaces.
        n_ctx: text prompt vectors per block, M (the paper's 4).
        ctx_init: words whose first `n_ctx` tokens start the context; the
            other words stay in the prompt as text. None: N(0, 0.02) vectors.
        prompt_depth: text blocks that take prompts, J >= 1 (the paper's 9).
        n_ctx_vision: vision prompt vectors per block, M_v (the paper's 4).
        vision_prompt_depth: vision blocks that take prompts, J_v (0 for
            no vision prompts); None for `prompt_depth`.
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    model = cocoop_tf.IVLP(clip, ["cat", "dog"], prompt_depth=2, n_ctx_vision=3, vision_prompt_depth=1)
    logits = model(np.zeros((2, 32, 32, 3), "float32"))  # [2, 2]
    ```
    """

    method = "ivlp"
    display_name = "IVLP"
    runs_by_default = False
    # The official base-to-new recipe (vit_b16_c2_ep20_batch4_4+4ctx).
    paper_settings = {"epochs": 20, "batch_size": 4, "lr": 0.0025, "n_ctx": 4, "prompt_depth": 9}
    run_settings = ("n_ctx", "ctx_init", "prompt_depth", "n_ctx_vision", "vision_prompt_depth")

    def __init__(
        self, clip, classnames, n_ctx=4, ctx_init="a photo of a", prompt_depth=9, n_ctx_vision=4,
        vision_prompt_depth=None, **kwargs,
    ):
        # Checked with the text depth (`_checked_depths`), once MaPLe's constructor has the backbone.
        self.n_ctx_vision = n_ctx_vision
        self.vision_prompt_depth = vision_prompt_depth
        super().__init__(clip, classnames, n_ctx=n_ctx, ctx_init=ctx_init, prompt_depth=prompt_depth, **kwargs)

    def _checked_depths(self, prompt_depth):
        text_blocks, vision_blocks = tower_blocks(self.clip)
        if not is_whole(prompt_depth) or not 1 <= prompt_depth <= text_blocks:
            raise ValueError(
                f"prompt_depth (--prompt-depth) is {shown(prompt_depth)}, but this backbone's text tower has "
                f"{text_blocks} blocks: set it between 1 and {text_blocks} (the text blocks that take prompts)."
            )
        vision_depth = prompt_depth if self.vision_prompt_depth is None else self.vision_prompt_depth
        if not is_whole(vision_depth) or not 0 <= vision_depth <= vision_blocks:
            raise ValueError(
                f"vision_prompt_depth (--vision-prompt-depth) is {shown(vision_depth)}"
                f"{' (prompt_depth, as none was given)' if self.vision_prompt_depth is None else ''}, but this "
                f"backbone's vision tower has {vision_blocks} blocks: set it between 0 (no vision prompts) "
                f"and {vision_blocks}."
            )
        if not is_whole(self.n_ctx_vision) or self.n_ctx_vision < 1:
            raise ValueError(
                f"n_ctx_vision (--n-ctx-vision) must be a whole number of vision prompt vectors, at least 1; "
                f"got {shown(self.n_ctx_vision)}."
            )
        self.vision_prompt_depth = int(vision_depth)
        self.n_ctx_vision = int(self.n_ctx_vision)
        return int(prompt_depth)

    def _make_prompt_learner(self):
        return IndependentPromptLearner(
            self.n_ctx,
            self.clip.text_encoder.embedding_dim,
            self.clip.vision_encoder.hidden_dim,
            depth=self.prompt_depth,
            n_ctx_vision=self.n_ctx_vision,
            vision_depth=self.vision_prompt_depth,
            dtype=self.clip.dtype_policy,
            name="prompt_learner",
        )

    @classmethod
    def check_prompt_config(cls, config, shapes):
        """Each prompt tensor of the file has the shape its config says, and none is missing or extra."""
        settings = {
            key: config.get(key, default)
            for key, default in (("n_ctx", 4), ("prompt_depth", 9), ("n_ctx_vision", 4))
        }
        settings["vision_prompt_depth"] = config.get("vision_prompt_depth", settings["prompt_depth"])
        if settings["vision_prompt_depth"] is None:
            settings["vision_prompt_depth"] = settings["prompt_depth"]
        for key, value in settings.items():
            if type(value) is not int or value < (0 if key == "vision_prompt_depth" else 1):
                raise ValueError(f"its config says {key}={shown(value)}, not a count this method takes.")
        n_ctx, depth = settings["n_ctx"], settings["prompt_depth"]
        n_ctx_vision, vision_depth = settings["n_ctx_vision"], settings["vision_prompt_depth"]
        # Leading axes only: load_prompt checks the widths against the backbone.
        expected = {
            "prompt_learner/ctx": (n_ctx,),
            "prompt_learner/deep_ctx": (depth - 1, n_ctx) if depth > 1 else None,
            "prompt_learner/vision_ctx": (n_ctx_vision,) if vision_depth > 0 else None,
            "prompt_learner/deep_vision_ctx": (vision_depth - 1, n_ctx_vision) if vision_depth > 1 else None,
        }
        said = ", ".join(f"{key}={value}" for key, value in settings.items())
        for name, leading in expected.items():
            shape = shapes.get(name)
            if leading is None and shape is not None:
                raise ValueError(f"its config says {said}, which has no {name}, but the file holds one {shape}.")
            if leading is not None and (shape is None or tuple(shape[: len(leading)]) != leading
                                        or len(shape) != len(leading) + 1):
                found = f"has shape {tuple(shape)}" if shape is not None else "is missing"
                raise ValueError(
                    f"its config says {said}, so {name} should have shape {(*leading, 'width')}, but it {found}."
                )

    def get_config(self):
        config = super().get_config()
        config.update({"n_ctx_vision": self.n_ctx_vision, "vision_prompt_depth": self.vision_prompt_depth})
        return config
