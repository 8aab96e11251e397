"""README's "Your own Keras graphs" snippet, run as written on a trial backbone, then served."""

import pathlib
import re

import keras
import numpy as np
import tensorflow as tf

import cocoop_tf

README = pathlib.Path(__file__).parent.parent / "README.md"


def _graph_snippet():
    section = README.read_text().split("## Your own Keras graphs", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_functional_graph_runs_as_written_and_exports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it exports to a relative folder
    clip = cocoop_tf.load_clip("random_tiny")
    batch = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    names = {"clip": clip, "base_classnames": ["cat", "dog"], "new_classnames": ["bird", "fish", "Boeing 747"],
             "batch": batch, "np": np, "keras": keras, "cocoop_tf": cocoop_tf}
    exec(compile(_graph_snippet(), "README.md", "exec"), names)
    ids = names["ids"]
    expected = np.asarray(names["model"].classify(batch, ids))
    assert expected.shape == (3, 3)
    predicted = names["graph"].predict([batch, np.broadcast_to(ids, (3, *ids.shape))], verbose=0)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-5)
    served = tf.saved_model.load(str(tmp_path / "my_graph"))  # TensorFlow alone reads the export
    outputs = served.serve([tf.constant(batch), tf.constant(np.broadcast_to(ids, (3, *ids.shape)))])
    np.testing.assert_allclose(np.asarray(outputs), expected, rtol=1e-4, atol=1e-4)
