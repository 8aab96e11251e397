"""The small pretrained CLIP, the mini benchmark with its shift, and `cocoop-tf demo`."""

import json
import os
import subprocess

import numpy as np
import pytest

from cocoop_tf import load_clip
from cocoop_tf.data import load_dataset
from cocoop_tf.demo import images as demo_images
from cocoop_tf.demo.pretrain import held_out_test_images
from cocoop_tf.demo.pretrain import zero_shot_accuracy
from cocoop_tf.protocols import load_predictions

# Measured by the pretraining script on these 1000 images (see pretraining's report).
REPORTED_ZERO_SHOT = 0.918


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mini"))


def test_shipped_mini_clip_has_its_reported_zero_shot_accuracy():
    clip = load_clip("mini_clip")
    images, labels, classnames = held_out_test_images()
    accuracy = zero_shot_accuracy(clip, images, labels, classnames)
    assert abs(accuracy - REPORTED_ZERO_SHOT) <= 0.01
    assert all(not w.trainable for w in clip.weights)


def test_mini_benchmark_is_held_out_and_shifted(mini_root):
    ds = load_dataset("mini_digits_animals", data_root=mini_root)
    assert ds.num_classes == 20
    base, new = ds.subsample("base"), ds.subsample("new")
    for view in (base, new):
        assert any(n.startswith("digit") for n in view.classnames)
        assert any(not n.startswith("digit") for n in view.classnames)
    assert len(ds.test) == 20 * 100 and len(ds.train) == 20 * 50
    pretraining = {demo_images.content_hash(i) for i in demo_images.load_part("pretrain").images}
    names = {os.path.basename(item.path)[:16] for split in ("train", "val", "test") for item in ds.items(split)}
    assert not names & {h[:16] for h in pretraining}  # files are named by their source's hash
    # The shift: pretraining draws on pure black; the benchmark's backgrounds are grey and noisy.
    train = next(iter(ds.to_tf_dataset("test", 64, training=False, image_size=32)))[0].numpy()
    corners = train[:, :3, :3, :].reshape(-1)
    assert corners.mean() > 15 and corners.std() > 3


def test_demo_command_end_to_end(mini_root, tmp_path):
    output = tmp_path / "demo"
    result = subprocess.run(
        ["cocoop-tf", "demo", "--output", str(output), "--data-root", mini_root],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| Method | Base | New | H |" in result.stdout
    results = json.loads((output / "base2new" / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["zeroshot"] + ["coop"] * 3 + ["cocoop"] * 3
    for run in results["runs"]:
        for key, path in run["predictions"].items():
            labels, predicted, _ = load_predictions(output / "base2new" / path)
            assert run["accuracy"][key] == pytest.approx(100 * np.mean(labels == predicted))
    assert (output / "base2new" / "results.png").stat().st_size > 10_000
    assert (output / "saved_model" / "cocoop" / "1" / "saved_model.pb").exists()
    deployment = json.loads((output / "deployment.json").read_text())
    assert deployment["max_difference_tflite_saved_model"] < 1e-4
    assert list(deployment["SavedModel"]) == list(deployment["TFLite"])  # same top classes
