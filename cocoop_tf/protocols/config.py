"""Run settings: the paper's defaults, a config file, and command-line overrides."""

import dataclasses
import json
import math
import numbers
import os

from cocoop_tf.data.transforms import check_crop_scale
from cocoop_tf.models import get_method
from cocoop_tf.models import method_names

# The settings a method's paper may set (`paper_settings`), and the CoCoOp paper's values.
# n_ctx None: as many context vectors as ctx_init has words.
METHOD_DEFAULTS = {"epochs": 10, "batch_size": 1, "lr": 0.002, "n_ctx": None}
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("mirrored", "multi_worker", "tpu")


@dataclasses.dataclass
class RunConfig:
    """Everything that decides a run's numbers; defaults are the paper's (ViT-B/16).

    A config file (JSON or YAML) holds any of these keys; command-line flags
    override it. `results.json` records the whole object.

    Args:
        backbone: CLIP source for `load_clip` (preset, folder, file, or a
            built-in name such as "random_tiny").
        methods: registered method names (`cocoop_tf.models.method_names()`:
            "zeroshot", "coop", "cocoop", "kgcoop", "maple", "ivlp",
            "promptsrc"); default the CoCoOp paper's three.
        seeds: few-shot sampling and training seeds; results are averaged.
        shots: training images per class.
        epochs: training epochs; the last epoch's model is evaluated. None:
            each method's paper setting (`paper_settings`; 10 for CoOp and
            CoCoOp, as the CoCoOp paper, 100 for KgCoOp, 5 for MaPLe, 20 for
            IVLP and PromptSRC).
        batch_size: global training batch size (split across replicas).
            None: each method's paper setting (1 for CoOp and CoCoOp, 128
            for KgCoOp, 4 for MaPLe, IVLP and PromptSRC).
        eval_batch_size: evaluation batch size on each replica.
        eval_shard_size: images per evaluation shard (rounded up to whole
            batches): the part of a test split each replica predicts at a
            time, and what a resumed evaluation does not predict again.
        lr: peak learning rate of SGD. None: each method's paper setting
            (0.002; 0.0035 for MaPLe; 0.0025 for IVLP and PromptSRC).
        momentum: SGD momentum.
        weight_decay: L2 coefficient (added to the gradient, as PyTorch).
        warmup_epochs: epochs at the constant warm-up learning rate.
        warmup_lr: warm-up learning rate.
        n_ctx: number of context vectors. None: ctx_init's word count (MaPLe:
            2, the first two words; the others stay text; IVLP and PromptSRC:
            4). CoOp, CoCoOp and KgCoOp need it to equal ctx_init's word count.
        ctx_init: initial context words, or None for random N(0, 0.02).
        prompt_depth: MaPLe's J, the blocks of each tower that take prompts;
            IVLP's and PromptSRC's text depth J_t.
        n_ctx_vision: IVLP's and PromptSRC's vision prompt vectors, M_v.
        vision_prompt_depth: IVLP's and PromptSRC's vision depth J_v, the
            vision blocks that take prompts (0: none). None: prompt_depth.
        reduction: CoCoOp's Meta-Net hidden width is projection_dim // reduction.
        kg_weight: KgCoOp's weight of the knowledge-guided term (lambda).
        text_loss_weight: PromptSRC's weight of the L1 distance between the
            prompted and the frozen CLIP's (template-averaged) text features.
        image_loss_weight: PromptSRC's weight of the L1 distance between the
            prompted and the frozen CLIP's image features.
        gpa_mean: mean (in epochs, 1-based) of PromptSRC's Gaussian prompt
            aggregation weights.
        gpa_std: their standard deviation (> 0).
        class_specific: CoOp with one context per class (cannot move to new
            classes; base-to-new and transfer need it off).
        precision: "float32", "mixed_float16" or "mixed_bfloat16".
        image_size: input side; None: the backbone's.
        crop_scale: [low, high] area range of the training images' random
            resized crop, as a fraction of the image; the paper's [0.08, 1].
        flip: random horizontal flip of training images (the paper's).
        templates: zero-shot prompt templates; None: the dataset's.
        skip_corrupt: leave unreadable images out (a line names each)
            instead of stopping before the run starts.
        deterministic: deterministic TensorFlow ops (slower), for bitwise
            repeatable runs; the training data (order and augmentation) is
            always a function of the seed.
        jit_compile: compile training and evaluation steps with XLA: True,
            False, or "auto": XLA when the text tower is at least
            `training.XLA_MIN_TEXT_WIDTH` wide, as in every CLIP release.
        strategy: None, "mirrored", "multi_worker" or "tpu".
        tpu: TPU name or address for strategy "tpu" (None: the local TPU).
        data_root: folder with the datasets (CoOp's $DATA).
        keep_checkpoints: "last" keeps the newest two epochs' checkpoints,
            what `resume` needs; "all" keeps every epoch's.
    """

    backbone: str = None
    methods: list = dataclasses.field(default_factory=lambda: method_names(by_default=True))
    seeds: list = dataclasses.field(default_factory=lambda: [1, 2, 3])
    shots: int = 16
    epochs: int = None
    batch_size: int = None
    eval_batch_size: int = 100
    eval_shard_size: int = 1000
    lr: float = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    n_ctx: int = None
    ctx_init: str = "a photo of a"
    prompt_depth: int = 9
    n_ctx_vision: int = 4
    vision_prompt_depth: int = None
    reduction: int = 16
    kg_weight: float = 8.0
    text_loss_weight: float = 25.0
    image_loss_weight: float = 10.0
    gpa_mean: float = 15.0
    gpa_std: float = 1.0
    class_specific: bool = False
    precision: str = "float32"
    image_size: int = None
    crop_scale: list = dataclasses.field(default_factory=lambda: [0.08, 1.0])
    flip: bool = True
    templates: list = None
    skip_corrupt: bool = False
    deterministic: bool = False
    jit_compile: object = "auto"
    strategy: str = None
    tpu: str = None
    data_root: str = None
    keep_checkpoints: str = "last"

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raises ValueError naming the first setting that makes no sense."""
        if not self.backbone:
            raise ValueError("No backbone: pass --backbone (or 'backbone' in the config file).")
        unknown = [m for m in self.methods if m not in method_names()]
        if unknown or not self.methods:
            raise ValueError(f"Unknown method(s) {unknown}; choose from {', '.join(method_names())}.")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"Methods repeat: {self.methods}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"Give one or more distinct seeds, got {self.seeds}.")
        for name in ("shots", "epochs", "batch_size", "eval_batch_size", "eval_shard_size", "reduction",
                     "prompt_depth", "n_ctx_vision"):
            value = getattr(self, name)
            if value is None and name in METHOD_DEFAULTS:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}.")
        depth = self.vision_prompt_depth
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
            raise ValueError(
                f"vision_prompt_depth (--vision-prompt-depth) must be an integer >= 0 (0: no vision "
                f"prompts), got {depth!r}."
            )
        if isinstance(self.kg_weight, bool) or not isinstance(self.kg_weight, (int, float)) or not self.kg_weight >= 0:
            raise ValueError(f"kg_weight must be a number >= 0, got {self.kg_weight!r}.")
        for name, minimum in (("text_loss_weight", 0), ("image_loss_weight", 0), ("gpa_mean", None),
                              ("gpa_std", None)):
            _check_number(name, getattr(self, name), minimum, positive=name == "gpa_std")
        if self.epochs is not None and self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"{self.epochs} epoch(s) with {self.warmup_epochs} warm-up epoch(s) leave no epoch "
                f"at the learning rate: pass --warmup-epochs 0 (warmup_epochs: 0 in a config "
                f"file) to train {self.epochs} epoch(s) on the cosine schedule alone, or more --epochs."
            )
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or self.lr <= 0):
            raise ValueError(f"lr must be a number > 0, got {self.lr!r}.")
        if self.n_ctx is not None and (isinstance(self.n_ctx, bool) or not isinstance(self.n_ctx, int) or self.n_ctx < 1):
            raise ValueError(f"n_ctx must be an integer >= 1, got {self.n_ctx!r}.")
        for method in self.methods:
            get_method(method).check_run_settings(method_settings(self.to_dict(), method))
        self.crop_scale = list(check_crop_scale(self.crop_scale))
        if self.precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}.")
        if self.keep_checkpoints not in ("last", "all"):
            raise ValueError(
                f'keep_checkpoints (--keep-checkpoints) must be "last" or "all", got {self.keep_checkpoints!r}.'
            )
        if not (isinstance(self.jit_compile, bool) or self.jit_compile == "auto"):
            raise ValueError(f"jit_compile must be true, false or \"auto\", got {self.jit_compile!r}.")
        if self.strategy not in (None, *STRATEGIES):
            raise ValueError(f"Unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}.")
        if self.templates is not None:
            if isinstance(self.templates, str):
                self.templates = [self.templates]
            if any(t.count("{}") != 1 for t in self.templates):
                raise ValueError(f"Each template needs exactly one '{{}}': {self.templates}.")

    def to_dict(self):
        return dataclasses.asdict(self)

    def for_method(self, method):
        """This config for the method alone, its paper's settings where this leaves them None.

        Args:
            method: a registered method name.
        """
        return RunConfig(**{**method_settings(self.to_dict(), method), "methods": [method]})

    def differences(self, other):
        """The settings, by name, whose values differ from `other` (a dict)."""
        mine = self.to_dict()
        return sorted(k for k in set(mine) | set(other) if mine.get(k) != other.get(k))


def _check_number(name, value, minimum=None, positive=False):
    """Raises ValueError unless `value` is a finite number (>= minimum, or > 0 when positive)."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} ({flag}) must be a finite number, got {value!r}.")
    if positive and not value > 0:
        raise ValueError(f"{name} ({flag}) must be a number > 0, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} ({flag}) must be a number >= {minimum}, got {value!r}.")


def read_config_file(path):
    """Reads a JSON or YAML config file into a dict of `RunConfig` settings.

    Keys may use dashes or underscores (`batch-size` or `batch_size`).

    Args:
        path: a `.json`, `.yaml` or `.yml` file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file not found: {path!r}.")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as error:
        raise ValueError(f"Config file {path!r} cannot be parsed: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path!r} must hold a mapping of settings.")
    return {key.replace("-", "_"): value for key, value in values.items()}


def make_config(file_values=None, overrides=None, known_extra=()):
    """Builds a `RunConfig` from defaults, a config file's values and overrides.

    Args:
        file_values: dict read by `read_config_file` (or None).
        overrides: dict of settings given on the command line; None values
            are ignored.
        known_extra: further keys the caller reads itself (e.g. "dataset"),
            accepted in the file and returned separately.

    Returns:
        `(config, extra)`: the `RunConfig` and a dict of the extra keys.
    """
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values = {}
    for source in (file_values or {}, overrides or {}):
        for key, value in source.items():
            if value is None and source is overrides:
                continue
            if key not in fields and key not in known_extra:
                raise ValueError(
                    f"Unknown setting {key!r}. Known settings: {', '.join(sorted(fields | set(known_extra)))}."
                )
            values[key] = value
    extra = {key: values.pop(key) for key in list(values) if key in known_extra}
    if values.get("ctx_init") in ("", "none", "None"):
        values["ctx_init"] = None
    return RunConfig(**values), extra


def method_settings(settings, method):
    """`settings` (a `RunConfig.to_dict()`) with the method's paper settings where they are None."""
    paper = get_method(method).paper_settings
    return {
        **settings,
        **{k: paper.get(k, default) for k, default in METHOD_DEFAULTS.items() if settings.get(k) is None},
    }
