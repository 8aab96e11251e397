"""The mini benchmark: held-out digits and animals in a style pretraining never saw.

`load_dataset("mini_digits_animals")` gives it through the data API like the
paper's datasets. On first use the images are written once as PNG files,
one folder per class, with a CoOp-format split file:

    <data_root>/mini_digits_animals/
        images/<class folder>/<source hash>.png
        split_zhou_MiniDigitsAnimals.json
        manifest.json

`data_root` defaults to `~/.cache/cocoop_tf` (`$XDG_CACHE_HOME/cocoop_tf`
when set). Every image comes from the held-out pool of `images.py`
(`benchmark_train`, `benchmark_val`, `benchmark_test`: 50, 20 and 100 per
class), drawn by `shift.render_shifted`, so neither the pictures nor their
style were seen in pretraining. Each file is named by the first 16 hex
digits of the SHA-256 of its source image (`images.content_hash`), so its
origin can be checked. The content is a deterministic function of the
installed packages: the same files on every machine.
"""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from cocoop_tf.data.sources import Source
from cocoop_tf.data.sources import read_split_file
from cocoop_tf.demo import images as demo_images
from cocoop_tf.demo.captions import ZERO_SHOT_TEMPLATE
from cocoop_tf.demo.shift import SHIFT_DESCRIPTION
from cocoop_tf.demo.shift import render_shifted
from cocoop_tf.files import make_public_folder

NAME = "mini_digits_animals"
SPLIT_FILE = "split_zhou_MiniDigitsAnimals.json"
MANIFEST_FILE = "manifest.json"
IMAGE_FOLDER = "images"
# Bump when the images or splits change, so old caches are rebuilt.
VERSION = 1
# The benchmark's splits and the held-out parts they come from.
SPLIT_PARTS = {"train": "benchmark_train", "val": "benchmark_val", "test": "benchmark_test"}


def default_data_root():
    """`$XDG_CACHE_HOME/cocoop_tf`, or `~/.cache/cocoop_tf`."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "cocoop_tf")


def class_folder(classname):
    """The folder name of a class: its name with spaces as underscores."""
    return classname.replace(" ", "_")


def file_key(source_image):
    """A benchmark image's path inside `images/`-relative class folder: `<hash16>.png`."""
    return demo_images.content_hash(source_image)[:16] + ".png"


def _manifest():
    return {
        "name": NAME,
        "version": VERSION,
        "shift": SHIFT_DESCRIPTION,
        "sizes": {split: len(demo_images.partition()[part]) for split, part in SPLIT_PARTS.items()},
    }


def materialize(data_root=None):
    """Writes the benchmark's images and split file, unless already there.

    The files are written to a temporary folder first and moved into place,
    so an interrupted run leaves no half-written dataset.

    Args:
        data_root: the folder that holds dataset folders (default
            `default_data_root()`).

    Returns:
        The dataset folder, `<data_root>/mini_digits_animals`.
    """
    data_root = os.path.expanduser(os.fspath(data_root or default_data_root()))
    folder = os.path.join(data_root, NAME)
    if _is_current(folder):
        return folder
    os.makedirs(data_root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{NAME}-", dir=data_root)
    make_public_folder(staging)
    try:
        _write(staging)
        if _is_current(folder):  # another process wrote it meanwhile; leave its files to its readers
            shutil.rmtree(staging)
            return folder
        if os.path.exists(folder):
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _is_current(folder):
    manifest_path = os.path.join(folder, MANIFEST_FILE)
    if not os.path.isfile(manifest_path):
        return False
    with open(manifest_path) as f:
        return json.load(f) == _manifest()


def _write(folder):
    source = demo_images.load_source_images()
    classnames = list(source.classnames)
    for name in classnames:
        os.makedirs(os.path.join(folder, IMAGE_FOLDER, class_folder(name)))
    split = {}
    for split_name, part in SPLIT_PARTS.items():
        indices = demo_images.partition()[part]
        shifted = render_shifted(source.images[indices])
        entries = []
        for index, image in zip(indices, shifted):
            label = int(source.labels[index])
            path = f"{class_folder(classnames[label])}/{file_key(source.images[index])}"
            with open(os.path.join(folder, IMAGE_FOLDER, path), "wb") as f:
                f.write(tf.io.encode_png(image).numpy())
            entries.append((label, path))
        # Class by class, as CoOp's split files list their items.
        split[split_name] = [[path, label, classnames[label]] for label, path in sorted(entries)]
    with open(os.path.join(folder, SPLIT_FILE), "w") as f:
        json.dump(split, f, indent=0)
    with open(os.path.join(folder, MANIFEST_FILE), "w") as f:
        json.dump(_manifest(), f, indent=2)


def mini_benchmark_source(data_root=None):
    """The mini benchmark as a data `Source` (writing its files first if needed).

    Args:
        data_root: the folder that holds dataset folders (default
            `default_data_root()`).

    Returns:
        A `cocoop_tf.data.sources.Source` named "mini_digits_animals", with
        the 20 class names of `images.CLASSNAMES` and the template
        "a photo of a {}.".
    """
    folder = materialize(data_root)
    image_dir = os.path.join(folder, IMAGE_FOLDER)
    classnames, splits = read_split_file(os.path.join(folder, SPLIT_FILE), image_dir)
    return Source(NAME, classnames, splits, ZERO_SHOT_TEMPLATE, image_dir)
