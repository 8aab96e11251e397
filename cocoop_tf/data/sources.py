"""Dataset sources on disk: CoOp's folder layouts and class-per-folder images.

A source knows a dataset's class names (label order) and the items of its
train, val and test splits. Item order is fixed by the files (split-file
order, or names sorted), never by the file system, so few-shot sampling picks
the same images on every machine.
"""

import collections
import errno
import json
import os
import random
import typing
import warnings

from cocoop_tf.data.benchmarks import DEFAULT_TEMPLATE
from cocoop_tf.data.image_files import CONVERT_COMMAND
from cocoop_tf.data.image_files import DECODED_NAMES
from cocoop_tf.data.image_files import IMAGE_EXTENSIONS
from cocoop_tf.data.pipeline import read_files

SPLITS = ("train", "val", "test")
# Names of images in formats TensorFlow cannot decode: named when they lie outside a class folder.
OTHER_IMAGE_EXTENSIONS = (
    ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".ico", ".ppm", ".pgm", ".pbm", ".pnm",
    ".psd", ".svg", ".tga", ".exr", ".hdr", ".dng", ".cr2", ".nef", ".arw", ".raw",
)
# Left-out entries named in full in the warning; the rest are counted.
NAMED_LEFT_OUT = 20


class Item(typing.NamedTuple):
    """One labelled image.

    Args:
        path: the image file (for TFDS sources, the record's `tfds_id`).
        label: its class index in the dataset's label order.
    """

    path: str
    label: int


class Source:
    """A dataset's class names and splits, with images read from files.

    Args:
        name: the dataset's name.
        classnames: class names in label order.
        splits: dict from "train", "val", "test" to lists of `Item` (a
            missing split is empty).
        template: the zero-shot prompt template.
        root: the folder that item paths are recorded relative to in
            few-shot files (the image folder).
        left_out: what class-per-folder layouts hold and do not take, as
            paths: the class folders' files that are not images by their
            names and their subfolders (with a trailing "/"; see
            `list_images`), and images beside the class folders. They were
            named in a warning when the source was read.
    """

    def __init__(self, name, classnames, splits, template=DEFAULT_TEMPLATE, root=None, left_out=()):
        self.name = name
        self.classnames = list(classnames)
        self.template = template
        self.root = root
        self.left_out = list(left_out)
        self._splits = {split: list(splits.get(split, [])) for split in SPLITS}

    def split(self, split):
        """The items of one split ("train", "val" or "test"), a list of `Item`."""
        return self._splits[split]

    def without(self, paths):
        """A copy of this source without the items at `paths` (e.g. corrupt files)."""
        paths = set(paths)
        splits = {split: [i for i in self._splits[split] if i.path not in paths] for split in SPLITS}
        return Source(self.name, self.classnames, splits, self.template, self.root, self.left_out)

    def key(self, item):
        """The item's path as recorded in split and few-shot files."""
        if self.root is None:
            return item.path
        return os.path.relpath(item.path, self.root).replace(os.sep, "/")

    def read(self, split, items, shuffle=False, seed=None, reshuffle_each_iteration=True):
        """The items' encoded images, a `tf.data.Dataset` of (path, bytes, label).

        Args:
            split: the split the items come from.
            items: list of `Item`.
            shuffle: whether to visit the items in a new random order each epoch.
            seed: the shuffling seed.
            reshuffle_each_iteration: False: the same order every pass.
        """
        del split  # Files are read the same whatever their split.
        return read_files(
            [i.path for i in items], [i.label for i in items], shuffle, seed, reshuffle_each_iteration
        )


# --- layouts ------------------------------------------------------------------


def list_images(folder, left_out=None):
    """Image files in a folder (no hidden files), sorted by name, as full paths.

    A file is taken by its name: an extension of `image_files.IMAGE_EXTENSIONS`
    in any case (.jpg, .JPG, .jpeg, .png, .webp, ...), the formats the
    pipelines decode. Subfolders are not searched.

    Args:
        folder: the folder.
        left_out: optional list; the other entries that are not hidden
            (files of other formats, such as .tiff, and subfolders, with a
            trailing "/") are appended to it, sorted, so that the caller can
            name them.
    """
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    taken = [n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    if left_out is not None:
        for name in names:
            path = os.path.join(folder, name)
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                left_out.append(path + "/" if os.path.isdir(path) else path)
    return [os.path.join(folder, n) for n in taken]


def warn_left_out(left_out, where, root):
    """One warning naming what the class folders hold that is not taken (see `list_images`).

    Args:
        left_out: paths from `list_images`.
        where: the dataset, for the message.
        root: the folder the paths are shown relative to.
    """
    if not left_out:
        return
    shown = [os.path.relpath(p, root) + ("/" if p.endswith("/") else "") for p in left_out]
    kinds = collections.Counter(
        "folder" if p.endswith("/") else (os.path.splitext(p)[1].lower() or "without extension")
        for p in left_out
    )
    more = len(shown) - NAMED_LEFT_OUT
    warnings.warn(
        f"{where}: {len(left_out)} {'entry' if len(left_out) == 1 else 'entries'} of {root} left out "
        f"({', '.join(f'{n} {kind}' for kind, n in kinds.most_common())}): "
        f"{', '.join(shown[:NAMED_LEFT_OUT])}{f', and {more} more' if more > 0 else ''}. "
        f"Only {DECODED_NAMES} files are taken, by name ({', '.join(IMAGE_EXTENSIONS)}, any case), "
        "and a class folder's subfolders are not searched. Convert images of other formats to PNG, "
        f"e.g. with Pillow: {CONVERT_COMMAND}; rename images whose names lack their format's extension; "
        "move the rest away (`load_dataset(...).source.left_out` lists all).",
        stacklevel=4,
    )


def list_folders(folder):
    """Subfolders of a folder (no hidden ones), sorted by name.

    Raises:
        ValueError: an entry is a symlink loop (which would otherwise be
            dropped as "not a folder", a class silently missing).
    """
    entries = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    for entry in entries:
        if entry.is_symlink() and path_problem(entry.path) == "symlink loop":
            raise ValueError(
                f"{entry.path} is a symlink loop (a link that leads back to itself): "
                "point it at its class folder, or remove it."
            )
    return sorted(e.name for e in entries if e.is_dir())


def path_problem(path):
    """None if `path` exists, else "symlink loop" or "not found"."""
    try:
        os.stat(path)
    except OSError as error:
        return "symlink loop" if error.errno == errno.ELOOP else "not found"
    return None


def listed_path(image_dir, path, listed_in, entry):
    """The image at `path` relative to `image_dir`, as a split or list file names it.

    Args:
        image_dir: the folder the paths are relative to.
        path: the path as written in the file.
        listed_in: the file, for messages.
        entry: the file's entry, for messages.

    Raises:
        ValueError: the path is not a relative path inside `image_dir` (as
            text, after removing "." and ".."; links inside the dataset are
            followed as usual).
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"{listed_in}: entry {entry!r} does not start with a relative path.")
    normal = os.path.normpath(path)
    if os.path.isabs(path) or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise ValueError(
            f"{listed_in}: entry {entry!r} names a file outside the image folder {image_dir}; "
            "the paths must be relative to it, without '..' leading out. Fix or replace the file."
        )
    return os.path.join(image_dir, normal)


def read_split_file(split_file, image_dir):
    """Reads a CoOp split file.

    The file is JSON: `{"train": [[path, label, classname], ...], "val": [...],
    "test": [...]}`, paths relative to the image folder.

    Args:
        split_file: path of the JSON file.
        image_dir: the folder the paths are relative to.

    Returns:
        `(classnames, splits)`: class names in label order, and a dict from
        split name to a list of `Item`, in file order.
    """
    with open(split_file) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{split_file!r} is not valid JSON: {error}.") from None
    if not isinstance(data, dict) or not set(data) & set(SPLITS):
        raise ValueError(
            f"{split_file!r} is not a split file: expected a JSON object with lists "
            f'"train", "val", "test" of [relative path, label, class name].'
        )
    names, splits = {}, {}
    for split in SPLITS:
        items = []
        for entry in data.get(split, []):
            if not (isinstance(entry, list) and len(entry) == 3):
                raise ValueError(
                    f"{split_file!r}: entry {entry!r} of {split!r} is not "
                    "[relative path, label, class name]."
                )
            path, label, classname = entry
            if isinstance(label, bool) or not isinstance(label, int) or not isinstance(classname, str):
                raise ValueError(
                    f"{split_file!r}: entry {entry!r} of {split!r} is not "
                    "[relative path, integer label, class name]."
                )
            items.append(Item(listed_path(image_dir, path, split_file, entry), label))
            names.setdefault(label, classname)
        splits[split] = items
    check_files_exist(splits, split_file, image_dir)
    return _label_order(names, split_file), splits


def check_files_exist(splits, listed_in, image_dir):
    """Raises FileNotFoundError when a split lists image files that are not there.

    A file that is there but cannot be read as an image (a folder, a FIFO)
    is left to the image check, which names what it is.

    Args:
        splits: dict from split name to a list of `Item`.
        listed_in: the file that lists them (named in the message).
        image_dir: the folder the listed paths are relative to.

    Raises:
        FileNotFoundError: files are missing.
        ValueError: a listed path is a symlink loop.
    """
    problems = {item.path: path_problem(item.path) for items in splits.values() for item in items}
    loops = [path for path, problem in problems.items() if problem == "symlink loop"]
    if loops:
        raise ValueError(
            f"{listed_in} lists {loops[0]}, a symlink loop (a link that leads back to itself)"
            f"{f' ({len(loops) - 1} more besides)' if len(loops) > 1 else ''}: point it at "
            "its image, or remove it."
        )
    missing = [path for path, problem in problems.items() if problem is not None]
    if missing:
        raise FileNotFoundError(
            f"{listed_in} lists {len(missing)} image file(s) that are missing, e.g. "
            f"{missing[0]}. The paths are relative to {image_dir}: put the images "
            "there (CoOp's DATASETS.md gives each dataset's layout), or use a split "
            "file that matches your copy."
        )


def _label_order(names, where):
    """Class names in label order from {label: name}; labels must be 0..n-1."""
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{where!r}: the labels are not 0..{len(names) - 1}: {sorted(names)}.")
    return [names[label] for label in range(len(names))]


def read_aircraft(folder, image_dir):
    """Reads FGVC-Aircraft's variant files, as CoOp does.

    `variants.txt` lists the 100 variants in label order; each
    `images_variant_<split>.txt` line is `<image id> <variant>`, the image
    being `<image_dir>/<image id>.jpg`.

    Args:
        folder: the dataset folder.
        image_dir: its image folder.

    Returns:
        `(classnames, splits)`.
    """
    with open(os.path.join(folder, "variants.txt")) as f:
        classnames = [line.strip() for line in f if line.strip()]
    labels = {name: label for label, name in enumerate(classnames)}
    splits = {}
    for split in SPLITS:
        path = os.path.join(folder, f"images_variant_{split}.txt")
        items = []
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                image_id, _, variant = line.strip().partition(" ")
                if variant not in labels:
                    raise ValueError(f"{path!r}: variant {variant!r} is not in variants.txt.")
                image = listed_path(image_dir, image_id + ".jpg", path, line.strip())
                items.append(Item(image, labels[variant]))
        splits[split] = items
    check_files_exist(splits, os.path.join(folder, "images_variant_*.txt"), image_dir)
    return classnames, splits


def read_classnames_file(path):
    """Reads an ImageNet `classnames.txt` (lines "n01440764 tench").

    Returns:
        dict from WordNet id to class name, in file order.
    """
    names = {}
    with open(path) as f:
        for line in f:
            wnid, _, name = line.strip().partition(" ")
            if wnid:
                names[wnid] = name.strip()
    return names


def read_class_folders(image_dir, classnames=None, left_out=None):
    """Reads one folder per class, the classes in sorted folder order.

    Args:
        image_dir: folder holding one subfolder of images per class.
        classnames: optional dict from folder name to class name (as
            ImageNet's WordNet ids to names); by default the folder names.
        left_out: optional list, to which what is not taken is appended:
            the class folders' other entries (see `list_images`), and
            images beside the class folders, outside any class.

    Returns:
        `(classnames, items)`: class names in label order and the items,
        class by class, files sorted by name.
    """
    folders = list_folders(image_dir)
    if classnames is not None:
        unknown = [f for f in folders if f not in classnames]
        if unknown:
            raise ValueError(
                f"Folders of {image_dir!r} missing from the class names file: "
                f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}."
            )
    items = []
    left_out = [] if left_out is None else left_out
    left_out += [
        os.path.join(image_dir, n) for n in sorted(os.listdir(image_dir))
        if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS)
        and not os.path.isdir(os.path.join(image_dir, n))
    ]
    for label, folder in enumerate(folders):
        others = []
        images = list_images(os.path.join(image_dir, folder), others)
        if not images:
            held = (
                f" (it holds {len(others)} other {'entry' if len(others) == 1 else 'entries'}, e.g. "
                f"{others[0]}; convert images of other "
                f"formats to PNG, e.g. with Pillow: {CONVERT_COMMAND})" if others else ""
            )
            raise ValueError(
                f"The class folder {os.path.join(image_dir, folder)} holds no images ({DECODED_NAMES} "
                f"files: {', '.join(IMAGE_EXTENSIONS)}, in any case){held}: remove it, or put its images "
                "in it. An empty folder would be a class no image can teach or test."
            )
        left_out += others
        items += [Item(p, label) for p in images]
    names = [classnames[f] if classnames is not None else f for f in folders]
    return names, items


def read_index_folders(image_dir, classnames, left_out=None):
    """Reads folders named by label index ("0".."999"), as ImageNet-V2 has them.

    Args:
        image_dir: folder of the label folders.
        classnames: all class names, in label order.
        left_out: optional list for the entries not taken (see `list_images`).

    Returns:
        A list of `Item`, label by label.
    """
    items = []
    for label in range(len(classnames)):
        folder = os.path.join(image_dir, str(label))
        if os.path.isdir(folder):
            items += [Item(p, label) for p in list_images(folder, left_out)]
    return items


def split_per_class(items, train=0.5, val=0.2, seed=0):
    """Splits items per class into train, val and test, shuffled by a seed.

    As CoOp made its split files for datasets without official splits: each
    class's images are shuffled and `round(n * train)` go to train,
    `round(n * val)` to val, the rest to test.

    Args:
        items: list of `Item`, files of one class in sorted order.
        train: fraction for train.
        val: fraction for val.
        seed: seed of the shuffle.

    Returns:
        dict from split name to a list of `Item`.
    """
    rng = random.Random(seed)
    by_label = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    splits = {split: [] for split in SPLITS}
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        n_train, n_val = round(len(group) * train), round(len(group) * val)
        splits["train"] += group[:n_train]
        splits["val"] += group[n_train : n_train + n_val]
        splits["test"] += group[n_train + n_val :]
    return splits


# --- sources ------------------------------------------------------------------


def benchmark_source(benchmark, data_root, classnames_file=None):
    """Reads one of the paper's datasets from CoOp's folder layout.

    Args:
        benchmark: a `Benchmark`.
        data_root: the folder that holds the dataset folders (CoOp's $DATA).
        classnames_file: for the ImageNet domain-shift sets, the ImageNet
            `classnames.txt` to use; by default the one in the dataset's
            folder, else `<data_root>/imagenet/classnames.txt`.

    Returns:
        A `Source`.
    """
    folder = os.path.join(os.path.expanduser(os.fspath(data_root)), benchmark.folder)
    required = {p: path_problem(os.path.join(folder, p)) for p in benchmark.required_paths()}
    loops = [os.path.join(folder, p) for p, problem in required.items() if problem == "symlink loop"]
    if loops:
        loop = folder if path_problem(folder) == "symlink loop" else loops[0]
        raise ValueError(
            f"Dataset {benchmark.name!r}: {loop} is a symlink loop (a link that leads back to "
            "itself): point it at the real file or folder, or remove it."
        )
    missing = [p for p, problem in required.items() if problem is not None]
    if missing:
        what = ", ".join(os.path.join(folder, p) for p in missing)
        raise FileNotFoundError(
            f"Dataset {benchmark.name!r} not found: expected {what}. Prepare the folder "
            f"{benchmark.folder}/ as CoOp's DATASETS.md describes ({benchmark.docs}), "
            f"and pass data_root (--data-root), the folder that holds {benchmark.folder}/ (now {data_root!r})."
        )
    image_dir = os.path.normpath(os.path.join(folder, benchmark.image_dir))
    layout = benchmark.layout
    left_out = []
    if layout == "split":
        classnames, splits = read_split_file(os.path.join(folder, benchmark.split_file), image_dir)
    elif layout == "aircraft":
        classnames, splits = read_aircraft(folder, image_dir)
    elif layout == "imagenet":
        wnids = read_classnames_file(classnames_file or os.path.join(folder, "classnames.txt"))
        classnames, train = read_class_folders(os.path.join(image_dir, "train"), wnids, left_out)
        test_names, test = read_class_folders(os.path.join(image_dir, "val"), wnids, left_out)
        if test_names != classnames:
            raise ValueError(
                f"{image_dir}/train and {image_dir}/val hold different class folders; "
                "both need the same 1000 WordNet-id folders."
            )
        # As CoOp: ImageNet's validation set is the test set, and also serves as val.
        splits = {"train": train, "val": test, "test": test}
    else:
        wnids = read_classnames_file(
            _imagenet_classnames_file(benchmark, folder, data_root, classnames_file)
        )
        if layout == "wnid_folders":
            classnames, test = read_class_folders(image_dir, wnids, left_out)
        else:
            classnames = list(wnids.values())
            test = read_index_folders(image_dir, classnames, left_out)
        splits = {"test": test}
    warn_left_out(left_out, benchmark.name, image_dir)
    return Source(benchmark.name, classnames, splits, benchmark.template, image_dir, left_out)


def _imagenet_classnames_file(benchmark, folder, data_root, classnames_file):
    candidates = [classnames_file] if classnames_file else [
        os.path.join(folder, "classnames.txt"),
        os.path.join(os.fspath(data_root), "imagenet", "classnames.txt"),
    ]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{benchmark.name!r} needs ImageNet's class names file, not found at "
        f"{' or '.join(candidates)}. Download classnames.txt as CoOp's DATASETS.md "
        f"describes ({benchmark.docs}), or pass classnames_file=."
    )


def folder_source(path, split_file=None):
    """Reads a folder of one subfolder of images per class.

    The classes are the subfolders in sorted order, named by their folder
    names. The splits come from, in this order of preference:

    - `split_file`: a CoOp-format split JSON, paths relative to `path`;
    - subfolders `train/` and `test/` (and optionally `val/`), each holding
      one subfolder per class (the classes are those of `train/`);
    - otherwise each class's images are split 50% train, 20% val, 30% test
      after a shuffle with a fixed seed (as CoOp split datasets that have
      no official split).

    Args:
        path: the folder.
        split_file: optional split file.

    Returns:
        A `Source`.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    name = os.path.basename(path)
    left_out = []
    if split_file is not None:
        classnames, splits = read_split_file(split_file, path)
    elif os.path.isdir(os.path.join(path, "train")) and (
        os.path.isdir(os.path.join(path, "test")) or os.path.isdir(os.path.join(path, "val"))
    ):
        classnames, train = read_class_folders(os.path.join(path, "train"), left_out=left_out)
        labels = {n: label for label, n in enumerate(classnames)}
        splits = {"train": train}
        for split in ("val", "test"):
            if os.path.isdir(os.path.join(path, split)):
                splits[split] = _relabel_folder_split(os.path.join(path, split), labels, left_out)
    else:
        classnames, items = read_class_folders(path, left_out=left_out)
        splits = split_per_class(items)
    if not classnames:
        count = f"{len(left_out)} image{'s' if len(left_out) > 1 else ''}"
        loose = f" (it holds {count} outside any, e.g. {left_out[0]})" if left_out else ""
        raise ValueError(
            f"{path!r} holds no class folders{loose}: expected one subfolder of images per class "
            "(e.g. cat/1.jpg, dog/2.jpg), or pass split_file=."
        )
    warn_left_out(left_out, name, path)
    return Source(name, classnames, splits, DEFAULT_TEMPLATE, path, left_out)


def _relabel_folder_split(folder, labels, left_out):
    names, items = read_class_folders(folder, left_out=left_out)
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise ValueError(f"Class folders in {folder!r} that train/ lacks: {unknown}.")
    return [Item(i.path, labels[names[i.label]]) for i in items]
