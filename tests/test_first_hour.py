"""A new user's first hour, from the README alone: a folder of their own images, README's dataset snippet.

Their images come in the formats and names cameras, phones and browsers
write (.JPG, .PNG, .webp, .tiff); the command line takes every image the
pipelines decode, and names each file it leaves out. README's snippet runs
as written on the trial backbones (32-pixel `random_tiny`, `mini_clip`).
"""

import json
import pathlib
import re
import warnings

import numpy as np
import pytest
from PIL import Image

import cocoop_tf
from cocoop_tf.protocols import load_predictions
from real_layouts import write_real_layout

README = pathlib.Path(__file__).parents[1] / "README.md"

# name: (Pillow format, options); every one but the TIFFs is decoded by the pipelines.
FILES = {
    "0.png": ("PNG", {}),
    "1.PNG": ("PNG", {}),
    "2.JPG": ("JPEG", {}),
    "3.jpeg": ("JPEG", {}),
    "4.webp": ("WEBP", {}),
    "5.WEBP": ("WEBP", {"lossless": True, "mode": "RGBA"}),  # with alpha
    "6.tiff": ("TIFF", {}),
    "7.TIF": ("TIFF", {}),
}
LEFT_OUT = ("6.tiff", "7.TIF")


def write_photo(path, fmt, seed, mode="RGB", lossless=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    image.save(path, fmt, **({"lossless": True} if lossless else {}))


def write_folder(root, split_counts, classes):
    """Every file of FILES for each class of each split (`split_counts`: split -> how many of FILES)."""
    seed = 0
    for split, count in split_counts.items():
        for name in classes:
            for file, (fmt, options) in list(FILES.items())[:count]:
                write_photo(root / split / name / file, fmt, seed, options.get("mode", "RGB"),
                            options.get("lossless", False))
                seed += 1
            (root / split / name / "notes.txt").write_text("taken on holiday")


def test_a_folder_of_mixed_formats_trains_and_tests_on_every_image_or_names_it(tmp_path, cli_here):
    root = tmp_path / "holiday"
    write_folder(root, {"train": len(FILES), "test": len(FILES)}, ["beach", "harbour"])
    taken = len(FILES) - len(LEFT_OUT)
    run = cli_here("train", "--dataset", root, "--backbone", "random_tiny", "--methods", "coop",
                   "--seeds", 1, "--shots", 16, "--epochs", 1, "--warmup-epochs", 0, "--batch-size", 4,
                   "--eval-batch-size", 16, "--output", tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    # Trained on every image it decodes: all 6 per class (fewer than the 16 shots asked, as it says).
    assert f"training on 16 shots of 2 all classes of holiday ({2 * taken} images)" in run.stdout, run.stdout
    assert (f"warning: holiday: 2 of the 2 classes have fewer than 16 train images and use all they have "
            f"(16-shot view, seed 1): beach ({taken}), harbour ({taken}).") in run.stderr
    # Tested on every one: each test image has its prediction.
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    labels, _, _ = load_predictions(tmp_path / "run" / results["runs"][0]["predictions"]["holiday"])
    assert len(labels) == 2 * taken
    # The rest is named, every file, in one warning that says how to convert them.
    (left_out,) = [line for line in run.stderr.splitlines() if "left out" in line]
    named = [f"{split}/{name}/{file}" for split in ("test", "train") for name in ("beach", "harbour")
             for file in (*LEFT_OUT, "notes.txt")]
    assert f"warning: holiday: {len(named)} entries of {root} left out (4 .tiff, 4 .tif, 4 .txt): " in left_out
    assert all(path in left_out for path in named), left_out
    assert "Convert images of other formats to PNG, e.g. with Pillow: `python -c" in left_out
    assert "val images" not in run.stderr  # the protocol reads none


def test_base_to_new_reports_the_short_classes_it_trains(tmp_path, cli_here):
    """The base classes' shortfall, nothing about new classes nor about val images it never reads."""
    root = tmp_path / "mine"
    write_folder(root, {"": 6}, ["ant", "bee", "cat", "dog"])  # 50/20/30 per class: 3 train, 1 val, 2 test
    run = cli_here("base2new", "--dataset", root, "--backbone", "random_tiny", "--methods", "coop",
                   "--seeds", 1, "--shots", 4, "--epochs", 1, "--warmup-epochs", 0, "--batch-size", 4,
                   "--eval-batch-size", 16, "--output", tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    warned = [line for line in run.stderr.splitlines() if "fewer than" in line]
    assert warned == [
        "cocoop-tf base2new: warning: mine: 2 of the 2 base classes have fewer than 4 train images and use "
        "all they have (4-shot view, seed 1): ant (3), bee (3)."
    ], run.stderr
    assert "training on 4 shots of 2 base classes of mine (6 images)" in run.stdout


def readme_dataset_snippet():
    """The Python block of README's "## Datasets" section, as written."""
    section = README.read_text(encoding="utf-8").split("\n## Datasets\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Datasets section has no Python block"
    return match.group(1)


def test_readme_dataset_snippet_feeds_the_trial_backbones(tmp_path, monkeypatch):
    """README's snippet, run as written (the data root aside), gives batches a 32-pixel model takes."""
    snippet = readme_dataset_snippet()
    assert 'data_root="/data"' in snippet
    write_real_layout(tmp_path / "data", "oxford_pets", counts=(3, 1, 2))
    snippet = snippet.replace('data_root="/data"', f'data_root="{tmp_path / "data"}"')
    monkeypatch.chdir(tmp_path)  # its cache_dir is relative
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 pets per class, not 16: the shortfall warning
        exec(compile(snippet, "README.md", "exec"), namespace)
    assert "clip" in namespace, "README's snippet should load its backbone, to build pipelines at its image_size="
    assert namespace["clip"].vision_encoder.image_shape[0] == 32, "README's snippet loads a trial backbone"
    # A model on random_tiny (mini_clip, the demo's, knows no pet names), of the same resolution.
    model = cocoop_tf.CoOp(cocoop_tf.load_clip("random_tiny"), namespace["base"].classnames)
    images, labels = next(iter(namespace["train"]))
    assert images.shape[1:] == (32, 32, 3), (
        "README's snippet must build its pipelines at the backbone's resolution (image_size=)"
    )
    assert model(images).shape == (len(labels), 3)
    new_images, _ = next(iter(namespace["test_new"]))
    model.set_classnames(namespace["ds"].subsample("new").classnames)
    assert model(new_images).shape[1] == 2


def test_a_pipeline_at_another_size_than_the_backbones_names_image_size(tmp_path):
    write_real_layout(tmp_path, "oxford_pets", counts=(1, 0, 1))
    ds = cocoop_tf.data.load_dataset("oxford_pets", data_root=tmp_path)
    model = cocoop_tf.CoOp(cocoop_tf.load_clip("random_tiny"), ds.classnames)
    images, _ = next(iter(ds.to_tf_dataset("test", batch_size=2, training=False)))  # the default, 224
    with pytest.raises(ValueError, match=re.escape("to_tf_dataset(..., image_size=32)") + ".*--image-size 32"):
        model(images)
    with pytest.raises(ValueError, match=r"image_size must be the backbone's resolution.*got None"):
        ds.to_tf_dataset("test", batch_size=2, training=False, image_size=None)


def test_evaluating_a_folder_traces_each_model_once_and_never_warns_of_retracing(tmp_path, cli_here):
    """TensorFlow warned of retracing on every run over a small folder: a new step was traced per
    split. A model keeps its traced step while its classes stay, and traces anew for new ones."""
    import logging

    import tensorflow as tf

    from cocoop_tf.data.dataset import load_dataset
    from cocoop_tf.protocols.evaluation import predict_split

    class Lines(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    logged = Lines()
    tf.get_logger().addHandler(logged)
    try:
        root = tmp_path / "mine"
        write_folder(root, {"": 6}, ["ant", "bee", "cat", "dog"])
        # Batches of 3 of the 4 test images per half: a shorter last batch on every split.
        run = cli_here("base2new", "--dataset", root, "--backbone", "random_tiny", "--methods", "zeroshot", "coop",
                       "--seeds", 1, "--shots", 4, "--epochs", 1, "--warmup-epochs", 0, "--batch-size", 4,
                       "--eval-batch-size", 3, "--output", tmp_path / "run")
        assert run.returncode == 0, run.stderr[-3000:]
        # The same model on the base classes, then on the new ones (a new trace), then the base again.
        view = load_dataset(str(root))
        model = cocoop_tf.CoOp(cocoop_tf.load_clip("random_tiny"), ["x"])
        for variable in model.trainable_variables:  # an untrained model gives every image one class
            variable.assign(np.random.default_rng(0).normal(0, 1, variable.shape))
        for half in ("base", "new", "base"):
            classes = view.subsample(half)
            model.set_classnames(classes.classnames)
            reference = np.concatenate([  # eagerly: Keras' predict traces its own function per class set
                np.argmax(model(images), axis=-1)
                for images, _ in classes.to_tf_dataset("test", 3, training=False, image_size=32)
            ])
            np.testing.assert_array_equal(predict_split(model, classes, "test", 3, 32, log=lambda line: None)[1],
                                          reference)
    finally:
        tf.get_logger().removeHandler(logged)
    said = "\n".join([run.stdout, run.stderr, *logged.lines])
    assert "retracing" not in said, said
