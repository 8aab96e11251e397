"""The published tables in `cocoop_tf.protocols.published` agree with their papers' averages."""

import numpy as np
import pytest

from cocoop_tf.protocols.published import BASE_TO_NEW
from cocoop_tf.protocols.published import BASE_TO_NEW_AVERAGE
from cocoop_tf.protocols.published import CROSS_DATASET
from cocoop_tf.protocols.published import CROSS_DATASET_TARGETS
from cocoop_tf.protocols.published import DOMAIN_GENERALIZATION
from cocoop_tf.protocols.published import SOURCES
from real_layouts import REAL_CLASSNAMES
from real_layouts import TEST_ONLY

ELEVEN = [name for name in REAL_CLASSNAMES if name not in TEST_ONLY]
# Methods whose papers' per-dataset rows are not in the tables, only their 11-dataset average.
AVERAGE_ONLY = {"ivlp"}


def test_published_tables_agree_with_the_papers_averages():
    """Each method's eleven rows average to its paper's 11-dataset figures, and H is their H."""
    assert sorted(BASE_TO_NEW) == sorted(ELEVEN)
    with_rows = {method for table in BASE_TO_NEW.values() for method in table}
    assert with_rows == set(BASE_TO_NEW_AVERAGE) - AVERAGE_ONLY
    for method, (base, new, h) in BASE_TO_NEW_AVERAGE.items():
        assert h == pytest.approx(2 * base * new / (base + new), abs=0.006), method
        if method in AVERAGE_ONLY:
            continue  # no rows, checked above: a method has all eleven or none
        rows = np.array([BASE_TO_NEW[name][method] for name in ELEVEN])
        assert rows.shape == (11, 3), method
        np.testing.assert_allclose(rows[:, :2].mean(axis=0), (base, new), atol=0.006, err_msg=method)
        # H from two-decimal Base and New; the KgCoOp paper truncates some H (91.096 -> 91.09).
        np.testing.assert_allclose(2 * rows[:, 0] * rows[:, 1] / rows[:, :2].sum(axis=1), rows[:, 2],
                                   atol=0.01, err_msg=method)
    for method, values in CROSS_DATASET.items():
        assert list(values) == ["imagenet", *CROSS_DATASET_TARGETS, "average"], method
        assert np.mean([values[t] for t in CROSS_DATASET_TARGETS]) == pytest.approx(values["average"], abs=0.006)
    assert all(list(values) == ["imagenet", *TEST_ONLY] for values in DOMAIN_GENERALIZATION.values())
    # Every method with published numbers names where they come from (results.md's footnote).
    assert set(BASE_TO_NEW_AVERAGE) | set(CROSS_DATASET) | set(DOMAIN_GENERALIZATION) <= set(SOURCES)
