"""The loader reads the paper's 15 datasets as their real layouts hold them."""

import collections
import math
import os

import pytest
from real_layouts import CALTECH_IGNORED
from real_layouts import IMAGENET_WNIDS
from real_layouts import PAPER_TEMPLATES
from real_layouts import REAL_CLASSNAMES
from real_layouts import REAL_FOLDERS
from real_layouts import TEST_ONLY
from real_layouts import write_all_real_layouts
from real_layouts import write_real_layout

from cocoop_tf.data import BENCHMARKS
from cocoop_tf.data import load_dataset
from cocoop_tf.data import subset_labels

COUNTS = (3, 1, 2)  # train, val, test images per class


def per_class(items):
    return dict(sorted(collections.Counter(item.label for item in items).items()))


def expected_sizes(name, n):
    train, val, test = COUNTS
    if name in TEST_ONLY:
        train = val = 0
    elif name == "imagenet":
        val = test  # CoOp: ImageNet's val set is the test set and the val set
    return [{label: c for label in range(n)} if c else {} for c in (train, val, test)]


def test_every_benchmark_has_a_real_layout():
    assert set(REAL_CLASSNAMES) == set(BENCHMARKS) == set(PAPER_TEMPLATES)
    assert all(4 <= len(names) <= 6 for names in REAL_CLASSNAMES.values())
    assert {name: BENCHMARKS[name].folder for name in BENCHMARKS} == REAL_FOLDERS


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_real_layout(tmp_path, name):
    folder = write_real_layout(tmp_path, name, COUNTS)
    assert folder == os.path.join(str(tmp_path), BENCHMARKS[name].folder)
    ds = load_dataset(name, data_root=tmp_path)
    names = REAL_CLASSNAMES[name]
    assert ds.source.classnames == names  # raw, as CoOp's split files / readers hold them
    assert ds.template == PAPER_TEMPLATES[name]
    for split, sizes in zip(("train", "val", "test"), expected_sizes(name, len(names))):
        items = ds.items(split)
        assert per_class(items) == sizes, split
        assert all(os.path.isfile(item.path) for item in items)
        assert all(item.path.startswith(folder + os.sep) for item in items)
    if name == "imagenet":
        assert ds.val == ds.test

    half = math.ceil(len(names) / 2)
    base = ds.few_shot(1, seed=1).subsample("base")
    assert base.num_classes == half
    assert [names[label] for label in subset_labels(len(names), "base")] == names[:half]
    one_each = {label: 1 for label in range(half)}
    if name in TEST_ONLY:
        assert base.train == [] and base.val == []
    else:
        assert per_class(base.train) == one_each
    if name not in (*TEST_ONLY, "imagenet"):  # CoOp's ImageNet keeps its whole val (= test) set
        assert per_class(base.val) == one_each
    assert per_class(base.test) == expected_sizes(name, half)[2]
    # The base view's images are those of the first classes, labels unchanged.
    for split in ("train", "val", "test"):
        source_labels = {item.path: item.label for item in ds.source.split(split)}
        assert all(source_labels[item.path] == item.label < half for item in base.items(split))


def test_caltech_ignored_folders_are_not_classes(tmp_path):
    write_real_layout(tmp_path, "caltech101")
    image_dir = tmp_path / "caltech-101" / "101_ObjectCategories"
    assert all(any((image_dir / ignored).iterdir()) for ignored in CALTECH_IGNORED)
    ds = load_dataset("caltech101", data_root=tmp_path)
    names = ds.source.classnames
    assert not set(names) & {*CALTECH_IGNORED, "Faces", "Leopards", "airplanes"}
    assert names[:2] == ["face", "leopard"]  # CoOp's renames, uppercase folders first
    paths = [item.path for split in ("train", "val", "test") for item in ds.items(split)]
    assert not any(f"{os.sep}{ignored}{os.sep}" in p for p in paths for ignored in CALTECH_IGNORED)
    assert any(f"{os.sep}Faces{os.sep}" in p for p in paths)  # files stay in the raw folders


@pytest.mark.parametrize(
    "name, folder", [("imagenet_a", "imagenet-a"), ("imagenet_r", "imagenet-r")]
)
def test_imagenet_a_r_hold_a_subset(tmp_path, name, folder):
    write_real_layout(tmp_path, "imagenet")
    write_real_layout(tmp_path, name)
    imagenet = load_dataset("imagenet", data_root=tmp_path).source.classnames
    ds = load_dataset(name, data_root=tmp_path)
    names = ds.source.classnames
    assert set(names) < set(imagenet)  # a strict subset, as 200 of the 1000
    assert [n for n in imagenet if n in names] == names  # in ImageNet's (WordNet id) order
    assert sorted({item.label for item in ds.test}) == list(range(len(names)))
    # README.txt sits among the class folders; file names of ImageNet-A have spaces.
    assert (tmp_path / BENCHMARKS[name].folder / folder / "README.txt").is_file()
    if name == "imagenet_a":
        assert all(" _ " in os.path.basename(item.path) for item in ds.test)


def test_shift_sets_label_like_imagenet(tmp_path):
    root = write_all_real_layouts(tmp_path, counts=(1, 1, 1))
    assert root == tmp_path
    assert sorted(os.listdir(root)) == sorted(REAL_FOLDERS.values())
    imagenet = load_dataset("imagenet", data_root=root)
    wnid_of = {name: wnid for wnid, name in IMAGENET_WNIDS.items()}
    v2 = load_dataset("imagenetv2", data_root=root)
    # ImageNet-V2's folder "i" is ImageNet's label i.
    assert [os.path.basename(os.path.dirname(i.path)) for i in v2.test] == [
        str(label) for label in range(len(imagenet.source.classnames))
    ]
    sketch = load_dataset("imagenet_sketch", data_root=root)
    assert [wnid_of[sketch.source.classnames[i.label]] for i in sketch.test] == [
        os.path.basename(os.path.dirname(i.path)) for i in sketch.test
    ]
    for name in BENCHMARKS:
        assert load_dataset(name, data_root=root).source.classnames == REAL_CLASSNAMES[name]
