"""What the library offers by name, listed without importing TensorFlow or building anything.

The command line's help, its choices and its suggestions for mistyped names
come from here, so that `cocoop-tf --help` and argument errors answer at
once. The registries that build things stay the truth, and
tests/test_cli_startup.py checks that this listing equals them:

- the methods: `cocoop_tf.models.METHODS` (class attributes, and the paper
  settings `cocoop_tf.protocols.config.method_settings` gives);
- the protocols' defaults: `cocoop_tf.protocols.protocol.PROTOCOLS`;
- the random test backbones: `cocoop_tf.clip.loader.RANDOM_CONFIGS`.

Backbones and datasets registered by name (the demo's among them) and the
paper's datasets are read from their own light registries, not copied.
A new method adds its line to `METHODS` here.
"""

import dataclasses

from cocoop_tf.clip.named_backbones import registered_backbones
from cocoop_tf.data.benchmarks import BENCHMARKS
from cocoop_tf.data.named_datasets import registered_datasets


@dataclasses.dataclass(frozen=True)
class MethodListing:
    """A registered method as the command line shows it.

    Args:
        name: its command-line name (`method`), e.g. `"cocoop"`.
        display_name: its name in tables, e.g. `"CoCoOp"`.
        learns: whether it trains.
        runs_by_default: whether it runs when no methods are named.
        epochs: its paper's training epochs.
        batch_size: its paper's global batch size.
        lr: its paper's peak learning rate.
    """

    name: str
    display_name: str
    learns: bool = True
    runs_by_default: bool = True
    epochs: int = 10
    batch_size: int = 1
    lr: float = 0.002


# In registration order.
METHODS = (
    MethodListing("zeroshot", "CLIP", learns=False),
    MethodListing("coop", "CoOp"),
    MethodListing("cocoop", "CoCoOp"),
    MethodListing("kgcoop", "KgCoOp", runs_by_default=False, epochs=100, batch_size=128),
    MethodListing("maple", "MaPLe", runs_by_default=False, epochs=5, batch_size=4, lr=0.0035),
    MethodListing("ivlp", "IVLP", runs_by_default=False, epochs=20, batch_size=4, lr=0.0025),
    MethodListing("promptsrc", "PromptSRC", runs_by_default=False, epochs=20, batch_size=4, lr=0.0025),
)


@dataclasses.dataclass(frozen=True)
class ProtocolListing:
    """What a protocol command runs on when it is not told.

    Args:
        default_methods: the methods it runs.
        default_source: its training dataset, or None (then it must be given).
        default_targets: its evaluation datasets beside the source.
    """

    default_methods: tuple
    default_source: str = None
    default_targets: tuple = ()


_CROSS_DATASET_TARGETS = ("caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                          "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
PROTOCOLS = {
    "base2new": ProtocolListing(("zeroshot", "coop", "cocoop")),
    "cross-dataset": ProtocolListing(("coop", "cocoop"), "imagenet", _CROSS_DATASET_TARGETS),
    "domain-generalization": ProtocolListing(
        ("zeroshot", "coop", "cocoop"), "imagenet", ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
    ),
    "train": ProtocolListing(("cocoop",)),
    "evaluate": ProtocolListing(("zeroshot",)),
}

# `load_clip`'s randomly initialised test backbones.
RANDOM_BACKBONES = ("random_tiny", "random_vit_b16")


def method_names(learns=None):
    """Method names in registration order; `learns` as `cocoop_tf.models.method_names`."""
    return [m.name for m in METHODS if learns is None or m.learns == learns]


def named_backbones():
    """`{name: description}` of the backbones `load_clip` knows by name (not keras-hub's presets)."""
    random = {name: "random weights, for tests" for name in RANDOM_BACKBONES}
    return {**random, **{name: description for name, (_, description) in registered_backbones().items()}}


def dataset_names():
    """The names `load_dataset` knows: the paper's datasets, then the registered ones."""
    return [*BENCHMARKS, *registered_datasets()]
