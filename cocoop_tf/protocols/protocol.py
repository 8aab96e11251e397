"""The protocols as values: what each one trains, evaluates, keys, summarises and compares with.

The command line, the runner and the results files read these; a protocol's
meaning is written here once.
"""

import dataclasses

from cocoop_tf.models import method_names
from cocoop_tf.protocols.published import CROSS_DATASET_TARGETS
from cocoop_tf.protocols.published import DOMAIN_TARGETS
from cocoop_tf.protocols.published import published_base_to_new
from cocoop_tf.protocols.published import published_transfer


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One of the paper's protocols (or a single step of one).

    Args:
        name: the command and the `protocol` of `results.json`.
        title: the heading of its results table.
        default_methods: `() -> list` of method names run when none are given.
        keyed_by_subset: results are keyed by class subset ("base", "new")
            rather than by dataset name.
        summary: the summary entry beyond the accuracies: "h" (harmonic
            mean of base and new), "average" (over the target datasets) or
            None.
        default_source: the training dataset when none is given.
        default_targets: the evaluation datasets beside the source.
        published: `(source) -> {method: {key: percent}}` of the paper's
            numbers for this protocol, or None.
    """

    name: str
    title: str
    default_methods: object = lambda: method_names(by_default=True)
    keyed_by_subset: bool = False
    summary: str = None
    default_source: str = None
    default_targets: tuple = ()
    published: object = None

    def published_numbers(self, source):
        """The paper's numbers to print beside the results, or None."""
        return self.published(source) if self.published else None


PROTOCOLS = {
    protocol.name: protocol
    for protocol in (
        Protocol(
            "base2new", "Base-to-new generalisation", keyed_by_subset=True, summary="h",
            published=published_base_to_new,
        ),
        Protocol(
            "cross-dataset", "Cross-dataset transfer",
            default_methods=lambda: method_names(learns=True, by_default=True), summary="average",
            default_source="imagenet", default_targets=CROSS_DATASET_TARGETS,
            published=lambda source: published_transfer("cross-dataset", source),
        ),
        Protocol(
            "domain-generalization", "Domain generalisation",
            default_source="imagenet", default_targets=DOMAIN_TARGETS,
            published=lambda source: published_transfer("domain-generalization", source),
        ),
        Protocol("train", "Training", default_methods=lambda: ["cocoop"]),
        Protocol("evaluate", "Evaluation", default_methods=lambda: method_names(learns=False)),
    )
}


def get_protocol(name):
    """The `Protocol` of a name; ValueError naming the protocols otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {name!r}; the protocols are {', '.join(PROTOCOLS)}.")
    return PROTOCOLS[name]
