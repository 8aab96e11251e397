"""TFDS sources: a tiny builder prepared in a temporary data dir, read back offline."""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cocoop_tf.data import load_dataset
from cocoop_tf.data.tfds_source import tfds_classnames

CLASSES = ["ant", "bee", "cat", "dog", "eel"]
SIZES = {"train": 6, "validation": 3, "test": 2}  # images per class


class TinyShapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Constant images whose value (40 * label) tells their label."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=CLASSES),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SIZES}

    def _generate_examples(self, split):
        for label in range(len(CLASSES)):
            for i in range(SIZES[split]):
                image = np.full((6 + i, 9, 3), 40 * label, np.uint8)
                yield f"{split}-{label}-{i}", {"image": image, "label": label}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    TinyShapes(data_dir=str(path)).download_and_prepare()
    return str(path)


def per_class(items):
    return dict(sorted(collections.Counter(item.label for item in items).items()))


def collect(dataset):
    pairs = [(x.numpy(), y.numpy()) for x, y in dataset]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def test_reads_a_prepared_builder_without_its_code(data_dir):
    # The builder class is not registered: TFDS reads the prepared files alone.
    ds = load_dataset("tfds:tiny_shapes", data_root=data_dir)
    assert ds.classnames == CLASSES and ds.template == "a photo of a {}."
    assert per_class(ds.train) == {label: 6 for label in range(5)}
    assert per_class(ds.val) == {label: 3 for label in range(5)}
    assert per_class(ds.test) == {label: 2 for label in range(5)}
    assert ds.train[0].path.startswith("tiny_shapes-train.tfrecord-")
    assert len({item.path for item in ds.train}) == 30

    images, labels = collect(ds.to_tf_dataset("test", 4, training=False, image_size=8))
    assert labels.tolist() == [item.label for item in ds.test]  # item order kept
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 40 * labels, atol=0.5)


def test_few_shot_and_base_new_views(data_dir, tmp_path):
    ds = load_dataset("tfds:tiny_shapes", data_root=data_dir)
    chosen = ds.few_shot(2, seed=1, cache_dir=tmp_path)
    assert per_class(chosen.train) == {label: 2 for label in range(5)}
    assert per_class(chosen.val) == {label: 2 for label in range(5)}
    assert chosen.train == load_dataset("tfds:tiny_shapes", data_root=data_dir).few_shot(2, 1).train
    assert chosen.train != ds.few_shot(2, seed=2).train
    assert ds.few_shot(2, seed=1, cache_dir=tmp_path).train == chosen.train  # read back

    new = chosen.subsample("new")
    assert new.classnames == ["dog", "eel"]
    train = new.to_tf_dataset("train", 8, training=True, image_size=8, cache=True, seed=0)
    for _ in range(2):
        images, labels = collect(train)
        assert sorted(labels.tolist()) == [0, 0, 1, 1]
        np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 40 * (labels + 3), atol=0.5)


def test_split_mapping(data_dir):
    ds = load_dataset(
        "tfds:tiny_shapes", data_root=data_dir,
        tfds_splits={"train": "train[:50%]", "test": "validation"},
    )
    assert len(ds.train) == 15 and ds.val == [] and len(ds.test) == 15
    with pytest.raises(ValueError, match="'val' split .* is empty.*tfds_splits="):
        ds.to_tf_dataset("val", 2, training=False)


def test_unprepared_and_unknown_builders(tmp_path):
    with pytest.raises(FileNotFoundError, match="'mnist' is not prepared.*tfds build mnist"):
        load_dataset("tfds:mnist", data_root=str(tmp_path))
    with pytest.raises(ValueError, match="no builder 'no_such_builder_xyz'"):
        load_dataset("tfds:no_such_builder_xyz", data_root=str(tmp_path))


def test_class_names_and_order_mapped_to_coop():
    caltech = tfds.builder("caltech101").info.features["label"].names
    names, kept = tfds_classnames("caltech101", caltech)
    assert len(names) == 100 and "background_google" not in names and "faces_easy" not in names
    assert names[:5] == ["face", "leopard", "motorbike", "accordion", "airplane"]
    assert [caltech[k] for k in kept[:3]] == ["faces", "leopards", "motorbikes"]

    sun, _ = tfds_classnames("sun397", ["/a/abbey", "/b/bakery/shop", "/b/badminton_court/indoor"])
    assert sun == ["abbey", "shop bakery", "indoor badminton_court"]
    eurosat = tfds.builder("eurosat/rgb").info.features["label"].names
    assert tfds_classnames("eurosat", eurosat)[0][:3] == [
        "Annual Crop Land", "Forest", "Herbaceous Vegetation Land",
    ]
    assert tfds_classnames("oxford_pets", ["Abyssinian", "american_bulldog"])[0] == [
        "abyssinian", "american_bulldog",
    ]
