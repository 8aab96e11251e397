"""The mini benchmark: held-out images, a real style shift, the data API."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from cocoop_tf.data import load_dataset
from cocoop_tf.demo import benchmark
from cocoop_tf.demo import images as demo_images
from cocoop_tf.demo.rendering import render_plain
from cocoop_tf.demo.shift import render_shifted


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mini_data"))


@pytest.fixture(scope="module")
def dataset(data_root):
    return load_dataset("mini_digits_animals", data_root=data_root)


def _source_hash_prefix(item):
    return os.path.basename(item.path)[: -len(".png")]


def test_classes_interleave_digits_and_animals(dataset):
    assert dataset.classnames == list(demo_images.CLASSNAMES)
    assert dataset.classnames[:4] == ["digit zero", "bear", "digit one", "bird"]
    assert dataset.classnames[-1] == "zebra" and dataset.template == "a photo of a {}."
    for subset in ("base", "new"):
        names = dataset.subsample(subset).classnames
        assert len(names) == 10
        assert sum(n.startswith("digit ") for n in names) == 5
    # Each file lies in the folder of its class.
    for item in dataset.test[::97]:
        folder = os.path.basename(os.path.dirname(item.path))
        assert folder == dataset.classnames[item.label].replace(" ", "_")


def test_split_sizes_and_data_api(dataset):
    assert [len(dataset.items(s)) for s in ("train", "val", "test")] == [1000, 400, 2000]
    for split in ("train", "val", "test"):
        assert np.bincount([i.label for i in dataset.items(split)]).min() == len(dataset.items(split)) // 20
    few = dataset.few_shot(4, seed=1).subsample("new")
    assert len(few.train) == 40 and {i.label for i in few.train} == set(range(10))
    assert {i.path for i in few.train} <= {i.path for i in dataset.train}
    images, labels = next(iter(few.to_tf_dataset("train", 8, training=True, image_size=32, seed=0)))
    assert images.shape == (8, 32, 32, 3) and labels.shape == (8,)


def test_images_are_held_out_from_pretraining(dataset):
    pretraining = {demo_images.content_hash(i)[:16] for i in demo_images.load_part("pretrain").images}
    pretraining_test = {
        demo_images.content_hash(i)[:16] for i in demo_images.load_part("pretrain_test").images
    }
    source = demo_images.load_source_images()
    by_hash = {demo_images.content_hash(i)[:16]: n for n, i in enumerate(source.images)}
    for split, part in benchmark.SPLIT_PARTS.items():
        names = [_source_hash_prefix(i) for i in dataset.items(split)]
        assert len(set(names)) == len(names)
        assert not set(names) & (pretraining | pretraining_test)
        assert {by_hash[n] for n in names} == set(demo_images.partition()[part].tolist())
    # The name is the hash of the image the file was drawn from: drawing that
    # source image again gives the file's pixels exactly.
    items = dataset.test[::150]
    sources = source.images[[by_hash[_source_hash_prefix(i)] for i in items]]
    files = np.stack([tf.io.decode_png(tf.io.read_file(i.path)).numpy() for i in items])
    np.testing.assert_array_equal(files, render_shifted(sources))
    labels = source.labels[[by_hash[_source_hash_prefix(i)] for i in items]]
    assert labels.tolist() == [i.label for i in items]


def test_style_differs_from_pretraining(dataset):
    part = demo_images.load_part("benchmark_test")
    plain = render_plain(part.images).astype(np.float32)
    shifted = np.stack(
        [tf.io.decode_png(tf.io.read_file(i.path)).numpy() for i in dataset.test[::10]]
    ).astype(np.float32)
    # Pretraining: pure black background, full-brightness ink.
    assert plain[:, :2, :2].max() == 0 and np.percentile(plain.max(axis=(1, 2, 3)), 10) > 240
    # Benchmark: grey, noisy background; faded ink; no colour.
    corners = shifted[:, :2, :2, 0]
    assert 10 < corners.mean() < 45 and corners.std() > 5
    assert np.percentile(shifted.max(axis=(1, 2, 3)), 90) < 215
    np.testing.assert_array_equal(shifted[..., 0], shifted[..., 2])


def test_files_are_written_once_and_rebuilt_when_outdated(data_root, dataset):
    folder = os.path.join(data_root, benchmark.NAME)
    split_file = os.path.join(folder, benchmark.SPLIT_FILE)
    written = os.path.getmtime(split_file)
    assert benchmark.materialize(data_root) == folder
    assert os.path.getmtime(split_file) == written
    with open(split_file) as f:
        split = json.load(f)
    assert [len(split[s]) for s in ("train", "val", "test")] == [1000, 400, 2000]
    # A cache from another version of the benchmark is replaced, not reused.
    manifest = os.path.join(folder, benchmark.MANIFEST_FILE)
    with open(manifest) as f:
        outdated = {**json.load(f), "version": 0}
    with open(manifest, "w") as f:
        json.dump(outdated, f)
    os.remove(dataset.test[0].path)
    benchmark.materialize(data_root)
    assert os.path.exists(dataset.test[0].path)
    assert not [n for n in os.listdir(data_root) if n.startswith(".")]


def test_unknown_dataset_error_lists_the_mini_benchmark():
    with pytest.raises(ValueError, match="mini_digits_animals"):
        load_dataset("no_such_dataset")
