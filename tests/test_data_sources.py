"""Dataset sources: CoOp's folder layouts, image folders, and their errors."""

import collections
import json
import os

import numpy as np
import pytest
from real_layouts import PAPER_TEMPLATES
from real_layouts import REAL_CLASSNAMES
from real_layouts import write_real_layout
from test_data_helpers import WNIDS
from test_data_helpers import write_class_folders
from test_data_helpers import write_classnames
from test_data_helpers import write_image

from cocoop_tf.data import BENCHMARKS
from cocoop_tf.data import load_dataset
from cocoop_tf.data.checks import find_corrupt_images

# (train, val, test) per class, cycled over the classes: classes differ in size.
COUNTS = [(3, 2, 2), (4, 1, 3), (2, 2, 1)]
SPLIT_FILE_SETS = sorted(n for n, b in BENCHMARKS.items() if b.layout == "split")


def per_class(items):
    return dict(sorted(collections.Counter(item.label for item in items).items()))


def class_counts(name):
    return [COUNTS[i % len(COUNTS)] for i in range(len(REAL_CLASSNAMES[name]))]


@pytest.mark.parametrize("name", SPLIT_FILE_SETS)
def test_split_file_layouts(tmp_path, name):
    benchmark = BENCHMARKS[name]
    counts = class_counts(name)
    folder = write_real_layout(tmp_path, name, counts)
    with open(os.path.join(folder, benchmark.split_file)) as f:
        split = json.load(f)
    ds = load_dataset(name, data_root=tmp_path)
    assert ds.source.classnames == REAL_CLASSNAMES[name]
    assert ds.template == PAPER_TEMPLATES[name]
    for part, column in zip(("train", "val", "test"), range(3)):
        items = ds.items(part)
        assert per_class(items) == {label: c[column] for label, c in enumerate(counts)}
        expected = [os.path.normpath(os.path.join(folder, benchmark.image_dir, rel))
                    for rel, _, _ in split[part]]
        assert [item.path for item in items] == expected  # split-file order
        assert all(os.path.isfile(item.path) for item in items)


def test_coop_names_and_env_root(tmp_path, monkeypatch):
    write_real_layout(tmp_path, "oxford_pets")
    monkeypatch.setenv("COCOOP_TF_DATA", str(tmp_path))
    assert load_dataset("OxfordPets").source.classnames == REAL_CLASSNAMES["oxford_pets"]


def test_fgvc_aircraft_variant_files(tmp_path):
    folder = tmp_path / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "F/A-18"]
    (folder / "images").mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(variants) + "\n")
    # Lines interleave variants: the loader must not assume the real files' grouping by variant.
    lines = {
        "train": ["1025794 A300B4", "1340192 707-320", "1400000 F/A-18", "1500000 A300B4"],
        "val": ["0034309 F/A-18", "0062432 707-320"],
        "test": ["2000001 707-320", "2000002 707-320", "2000003 F/A-18"],
    }
    for split, rows in lines.items():
        (folder / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")
        for row in rows:
            write_image(folder / "images" / f"{row.split()[0]}.jpg")
    ds = load_dataset("fgvc_aircraft", data_root=tmp_path)
    assert ds.classnames == variants
    assert ds.template == "a photo of a {}, a type of aircraft."
    assert [(os.path.basename(i.path), i.label) for i in ds.train] == [
        ("1025794.jpg", 1), ("1340192.jpg", 0), ("1400000.jpg", 2), ("1500000.jpg", 1)
    ]
    assert per_class(ds.val) == {0: 1, 2: 1} and per_class(ds.test) == {0: 2, 2: 1}


def test_imagenet_folders_and_classnames(tmp_path):
    folder = tmp_path / "imagenet"
    write_classnames(folder / "classnames.txt")
    wnids = ["n01484850", "n01440764", "n01443537"]
    write_class_folders(folder / "images" / "train", {w: 3 for w in wnids}, ext=".JPEG")
    write_class_folders(folder / "images" / "val", {w: 2 for w in wnids}, ext=".JPEG")
    ds = load_dataset("imagenet", data_root=tmp_path)
    assert ds.classnames == ["tench", "goldfish", "great white shark"]  # sorted WordNet ids
    assert per_class(ds.train) == {0: 3, 1: 3, 2: 3}
    assert per_class(ds.test) == {0: 2, 1: 2, 2: 2}
    assert ds.val == ds.test  # as CoOp: ImageNet's val set is the test set
    assert os.path.dirname(ds.train[0].path).endswith(os.path.join("train", "n01440764"))


def test_imagenet_domain_shift_sets(tmp_path):
    write_classnames(tmp_path / "imagenet" / "classnames.txt")
    # ImageNet-V2: folders named by label index; its own copy of classnames.txt.
    v2 = tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    write_class_folders(v2, {"0": 2, "1": 1, "4": 3}, ext=".jpeg")
    write_classnames(tmp_path / "imagenetv2" / "classnames.txt")
    ds = load_dataset("imagenetv2", data_root=tmp_path)
    assert ds.classnames == list(WNIDS.values())
    assert per_class(ds.test) == {0: 2, 1: 1, 4: 3} and ds.train == [] and ds.val == []

    # ImageNet-Sketch: all classes; classnames.txt only in imagenet/ (fallback).
    write_class_folders(tmp_path / "imagenet-sketch" / "images", {w: 1 for w in WNIDS}, ".JPEG")
    ds = load_dataset("imagenet_sketch", data_root=tmp_path)
    assert ds.classnames == list(WNIDS.values()) and len(ds.test) == 5

    # ImageNet-A / -R: only the classes present (200 in the real sets), sorted ids.
    for name, folder, sub, present in [
        ("imagenet_a", "imagenet-adversarial", "imagenet-a", ["n01494475", "n01443537"]),
        ("imagenet_r", "imagenet-rendition", "imagenet-r", ["n01491361", "n01440764", "n01484850"]),
    ]:
        write_class_folders(tmp_path / folder / sub, {w: 2 for w in present})
        (tmp_path / folder / sub / "README.txt").write_text("not a class")
        write_classnames(tmp_path / folder / "classnames.txt")
        ds = load_dataset(name, data_root=tmp_path)
        assert ds.classnames == [WNIDS[w] for w in sorted(present)]
        assert per_class(ds.test) == {i: 2 for i in range(len(present))}
        assert ds.template == "a photo of a {}."


def test_missing_dataset_folder_says_what_and_where(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("oxford_pets", data_root=tmp_path)
    message = str(error.value)
    assert os.path.join(str(tmp_path), "oxford_pets", "images") in message
    assert "split_zhou_OxfordPets.json" in message
    assert "DATASETS.md#oxfordpets" in message and "data_root" in message
    with pytest.raises(FileNotFoundError, match="images_variant_train.txt"):
        load_dataset("fgvc_aircraft", data_root=tmp_path)


def test_missing_imagenet_classnames_file(tmp_path):
    write_class_folders(tmp_path / "imagenet-sketch" / "images", {"n01440764": 1})
    with pytest.raises(FileNotFoundError, match="classnames.txt.*DATASETS.md"):
        load_dataset("imagenet_sketch", data_root=tmp_path)


def test_missing_data_root(monkeypatch):
    monkeypatch.delenv("COCOOP_TF_DATA", raising=False)
    with pytest.raises(ValueError, match=r"needs data_root \(--data-root\).*COCOOP_TF_DATA"):
        load_dataset("dtd")


def test_unknown_name_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="Unknown dataset 'oxford_petz'.*oxford_pets.*tfds:"):
        load_dataset("oxford_petz")
    with pytest.raises(FileNotFoundError, match="No folder"):
        load_dataset("./no/such/folder")


def test_malformed_split_file(tmp_path):
    folder = tmp_path / "dtd"
    (folder / "images").mkdir(parents=True)
    (folder / "split_zhou_DescribableTextures.json").write_text(json.dumps({"train": [["a.jpg", 0]]}))
    with pytest.raises(ValueError, match=r"not \[relative path, label, class name\]"):
        load_dataset("dtd", data_root=tmp_path)


def test_image_folder_split_per_class(tmp_path):
    root = tmp_path / "my_pets"
    write_class_folders(root, {"dog": 10, "cat": 3, "ant": 5})
    (root / "dog" / "notes.txt").write_text("not an image")
    write_image(root / "dog" / ".hidden.jpg")
    with pytest.warns(UserWarning, match="dog/notes.txt"):
        ds = load_dataset(root)
    assert ds.name == "my_pets" and ds.classnames == ["ant", "cat", "dog"]
    assert ds.template == "a photo of a {}."
    # 50% / 20% / 30% per class, rounded as CoOp (half to even).
    assert per_class(ds.train) == {0: 2, 1: 2, 2: 5}
    assert per_class(ds.val) == {0: 1, 1: 1, 2: 2}
    assert per_class(ds.test) == {0: 2, 2: 3}
    all_paths = [i.path for split in (ds.train, ds.val, ds.test) for i in split]
    assert len(set(all_paths)) == 18 and not any(p.endswith((".txt", ".hidden.jpg")) for p in all_paths)
    assert ds.source.left_out == [str(root / "dog" / "notes.txt")]  # named; the hidden file is not
    with pytest.warns(UserWarning, match=r"my_pets: 1 entry of .*my_pets left out \(1 \.txt\): dog/notes\.txt\. "):
        assert load_dataset(str(root)).train == ds.train  # the same split every time
    with pytest.warns(UserWarning, match="dog/notes.txt"):
        assert load_dataset("my_pets", data_root=tmp_path).test == ds.test


def test_image_folder_takes_every_decoded_format_in_any_case_and_names_the_rest(tmp_path):
    from PIL import Image

    root = tmp_path / "phone"
    (root / "cat" / "more").mkdir(parents=True)
    photo = Image.fromarray(np.zeros((4, 4, 3), np.uint8))
    formats = {"a.JPG": "JPEG", "b.Jpeg": "JPEG", "c.PNG": "PNG", "d.webp": "WEBP", "e.WEBP": "WEBP",
               "f.gif": "GIF", "g.BMP": "BMP", "h.jfif": "JPEG"}
    for name, kind in formats.items():
        photo.save(root / "cat" / name, kind)
    taken = list(formats)
    photo.save(root / "cat" / "i.tiff", "TIFF")
    photo.save(root / "cat" / "j.HEIC", "PNG")  # a name not taken, whatever the bytes
    photo.save(root / "cat" / "more" / "k.jpg", "JPEG")  # subfolders are not searched
    photo.save(root / "stray.jpg", "JPEG")  # beside the class folders: no class
    (root / "README.txt").write_text("not named: only images beside the class folders are")
    with pytest.warns(UserWarning) as caught:
        ds = load_dataset(root)
    taken_paths = sorted(i.path for split in (ds.train, ds.val, ds.test) for i in split)
    assert taken_paths == sorted(str(root / "cat" / name) for name in taken)
    left_out = [str(root / "stray.jpg"), *(str(root / "cat" / n) for n in ("i.tiff", "j.HEIC")), str(root / "cat" / "more") + "/"]
    assert ds.source.left_out == left_out
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(
        f"phone: 4 entries of {root} left out (1 .jpg, 1 .tiff, 1 .heic, 1 folder): stray.jpg, cat/i.tiff, "
        "cat/j.HEIC, cat/more/. Only JPEG, PNG, GIF, BMP or WebP files are taken, by name (.jpg, "
    ), message
    assert "Convert images of other formats to PNG, e.g. with Pillow: `python -c" in message
    # Every taken image decodes (the image check passes), and the refused TIFF says how to convert it.
    assert find_corrupt_images(taken_paths) == []
    with pytest.raises(ValueError, match=r"holds no class folders \(it holds 1 image outside any, e.g. .*more/k.jpg\)"):
        load_dataset(root / "cat" / "more")  # a folder of images, not of class folders
    ((_, reason),) = find_corrupt_images([str(root / "cat" / "i.tiff")])
    assert reason.startswith("a TIFF file, which TensorFlow's decoder cannot read (it reads JPEG, PNG, GIF, BMP or WebP): convert it to PNG")


def test_image_folder_with_split_folders_and_split_file(tmp_path):
    root = tmp_path / "custom"
    write_class_folders(root / "train", {"b": 2, "a": 3})
    write_class_folders(root / "test", {"b": 1})
    ds = load_dataset(root)
    assert ds.classnames == ["a", "b"]
    assert per_class(ds.train) == {0: 3, 1: 2} and per_class(ds.test) == {1: 1} and ds.val == []

    split = {"train": [["train/b/000.jpg", 0, "bee"]], "val": [], "test": [["test/b/000.jpg", 0, "bee"]]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    ds = load_dataset(root, split_file=tmp_path / "split.json")
    assert ds.classnames == ["bee"]
    assert ds.train[0].path == os.path.join(str(root), "train/b/000.jpg")


def test_empty_class_folder_is_refused(tmp_path):
    write_class_folders(tmp_path / "mine", {"cat": 2, "dog": 2})
    (tmp_path / "mine" / "owl").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*owl holds no images .*: remove it"):
        load_dataset(tmp_path / "mine")
    (tmp_path / "mine" / "owl" / "0.tif").write_bytes(b"II*\x00")
    with pytest.raises(ValueError, match=r"owl holds no images .*\(it holds 1 other entry, e.g. .*0.tif; convert"):
        load_dataset(tmp_path / "mine")
