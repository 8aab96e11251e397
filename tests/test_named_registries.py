"""The registries of named backbones and datasets that `load_clip` and `load_dataset` consult."""

import pytest

import cocoop_tf
from cocoop_tf.clip import named_backbones
from cocoop_tf.clip.backbone import random_backbone
from cocoop_tf.clip.loader import RANDOM_CONFIGS
from cocoop_tf.clip.named_backbones import register_backbone
from cocoop_tf.data import load_dataset
from cocoop_tf.data import named_datasets
from cocoop_tf.data.named_datasets import register_dataset
from cocoop_tf.data.sources import Item
from cocoop_tf.data.sources import Source


@pytest.fixture(autouse=True)
def restore_registries(monkeypatch):
    # Each test registers into a copy; monkeypatch puts the real registries back.
    monkeypatch.setattr(named_backbones, "_BACKBONES", dict(named_backbones._BACKBONES))
    monkeypatch.setattr(named_datasets, "_DATASETS", dict(named_datasets._DATASETS))


def test_importing_the_package_registers_the_demo():
    assert "mini_clip" in named_backbones.registered_backbones()
    assert "mini_digits_animals" in named_datasets.registered_datasets()


def test_registered_backbone_is_loaded_frozen():
    calls = []

    def load(dtype):
        calls.append(dtype)
        return random_backbone(RANDOM_CONFIGS["random_tiny"], 0, dtype)

    register_backbone("toy_clip", load, "a toy backbone")
    backbone = cocoop_tf.load_clip("toy_clip", dtype="float32")
    assert calls == ["float32"]
    assert not backbone.trainable


def test_unknown_source_lists_registered_backbones():
    register_backbone("toy_clip", lambda dtype: None, "a toy backbone")
    with pytest.raises(ValueError, match="Unknown CLIP source 'toy_clp'.*'mini_clip'.*'toy_clip': a toy backbone"):
        cocoop_tf.load_clip("toy_clp")


def test_registered_dataset_gets_the_data_root(tmp_path):
    def make_source(data_root):
        items = [Item(str(tmp_path / f"{label}.png"), label) for label in range(2)]
        return Source("toy_set", ["cat", "dog"], {"train": items, "test": items}, root=data_root)

    register_dataset("toy_set", make_source, "a toy dataset")
    dataset = load_dataset("toy_set", tmp_path)
    assert dataset.name == "toy_set"
    assert dataset.classnames == ["cat", "dog"]
    assert dataset.source.root == tmp_path


def test_unknown_dataset_lists_registered_datasets(tmp_path):
    register_dataset("toy_set", lambda data_root: None, "a toy dataset")
    with pytest.raises(ValueError, match="Unknown dataset 'toy_sett'.*oxford_pets.*mini_digits_animals.*toy_set"):
        load_dataset("toy_sett", tmp_path)


def test_a_name_cannot_be_taken_twice():
    register_backbone("toy_clip", lambda dtype: None, "a toy backbone")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("toy_clip", lambda dtype: None, "another toy backbone")
    register_dataset("toy_set", lambda data_root: None, "a toy dataset")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy_set", lambda data_root: None, "another toy dataset")
