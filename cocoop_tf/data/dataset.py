"""The dataset object: splits, few-shot and base/new views, tf.data pipelines."""

import collections
import hashlib
import json
import math
import numbers
import os
import random
import re
import warnings
import weakref

from cocoop_tf.clip.prompts import clean_classnames
from cocoop_tf.data.benchmarks import BENCHMARKS
from cocoop_tf.data.benchmarks import find_benchmark
from cocoop_tf.data.named_datasets import registered_datasets
from cocoop_tf.data.pipeline import make_pipeline
from cocoop_tf.data.sources import SPLITS
from cocoop_tf.data.sources import benchmark_source
from cocoop_tf.data.sources import folder_source
from cocoop_tf.data.sources import path_problem
from cocoop_tf.data.transforms import check_crop_scale
from cocoop_tf.files import write_text

DATA_ROOT_VARIABLE = "COCOOP_TF_DATA"
FEW_SHOT_FORMAT = "cocoop_tf.few_shot.v1"
SUBSETS = ("all", "base", "new")
# The few-shot shortfalls reported, per source (see `ImageDataset._warn_shortfall`).
_REPORTED_SHORTFALLS = weakref.WeakKeyDictionary()


def _safe(name):
    """A dataset name usable in file names."""
    return re.sub(r"[^\w.-]+", "_", name)


def sample_few_shot(items, shots, rng):
    """Draws `shots` distinct items per class, as Dassl's `generate_fewshot_dataset`.

    Classes are visited in the order their first item appears in `items`
    (label order for split files, which list the items class by class); a
    class with at least `shots` items gets `rng.sample(its items, shots)`,
    a smaller class keeps all its items. With `rng = random.Random(seed)`
    this picks the images CoOp's code picks after `random.seed(seed)` from
    the same item list.

    Args:
        items: list of `Item`.
        shots: images per class.
        rng: a `random.Random`.

    Returns:
        `(chosen, short)`: the chosen items, class by class, and the labels
        of the classes that had fewer than `shots` items.
    """
    groups = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    chosen, short = [], []
    for label, group in groups.items():
        if len(group) >= shots:
            chosen += rng.sample(group, shots)
        else:
            chosen += group
            short.append(label)
    return chosen, short


def subset_labels(num_classes, subset):
    """The labels of the base-to-new subsets: base = the first ceil(n / 2), new = the rest.

    Args:
        num_classes: n, the number of classes.
        subset: "all", "base" or "new".

    Returns:
        A `range` of the original labels kept, in order (the new label of
        each is its position).
    """
    half = math.ceil(num_classes / 2)
    return {"all": range(num_classes), "base": range(half), "new": range(half, num_classes)}[subset]


class ImageDataset:
    """An image classification dataset and its views.

    Made by `load_dataset`. Views return new objects and compose in any
    order: `ds.few_shot(16, 1).subsample("base")` is
    `ds.subsample("base").few_shot(16, 1)`, since few-shot sampling always
    runs over all classes first, as in CoOp.

    Args:
        source: a `sources.Source` (or `TFDSSource`): class names and splits.
        shots: the few-shot view's images per class (None: all images).
        seed: the few-shot view's seed.
        subset: "all", "base" or "new".
        chosen: the few-shot choice, dict from "train"/"val" to items with
            the source's labels.

    Attributes:
        name: the dataset's name.
        classnames: class names in label order (of this view), as the paper
            prints them and the models use them: underscores become spaces
            (`source.classnames` keeps the names the files use).
        template: the zero-shot prompt template, e.g. "a photo of a {}.".
        train, val, test: lists of `Item(path, label)`.
        shots, seed: the few-shot view's parameters (None for all images).
        subset: "all", "base" or "new".
        source: where the images come from.
    """

    def __init__(self, source, *, shots=None, seed=None, subset="all", chosen=None):
        self.source = source
        self.shots = shots
        self.seed = seed
        self.subset = subset
        self._chosen = dict(chosen or {})
        self._items = {}
        self._reported = set()

    @property
    def name(self):
        return self.source.name

    @property
    def template(self):
        return self.source.template

    @property
    def _labels(self):
        return subset_labels(len(self.source.classnames), self.subset)

    @property
    def classnames(self):
        return clean_classnames([self.source.classnames[label] for label in self._labels])

    @property
    def num_classes(self):
        return len(self._labels)

    def items(self, split):
        """The items of a split ("train", "val" or "test") in this view.

        In a few-shot view, the first call for "train" or "val" warns when
        classes of this view have fewer images than the view draws (see
        `few_shot`): the warning is about the images in use, so it names
        only this view's classes (base ones in a base view), and only
        splits that are read.

        Returns:
            A list of `Item(path, label)`, labels relabelled from 0 in a
            base/new view.
        """
        items = self._view_items(split)
        if split in self._chosen and split not in self._reported:
            self._reported.add(split)
            self._warn_shortfall(split, items)
        return items

    def _view_items(self, split):
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
        if split not in self._items:
            items = self._chosen[split] if split in self._chosen else self.source.split(split)
            new_label = {old: new for new, old in enumerate(self._labels)}
            self._items[split] = [
                item._replace(label=new_label[item.label])
                for item in items
                if item.label in new_label
            ]
        return self._items[split]

    def _few_shot_size(self, split):
        """Images per class that a few-shot view draws: `shots` for train, `min(shots, 4)` for val."""
        return self.shots if split == "train" else min(self.shots, 4)

    def _warn_shortfall(self, split, items):
        if not items:  # a test-only dataset: no such split to draw from
            return
        wanted = self._few_shot_size(split)
        counts = collections.Counter(item.label for item in items)
        short = [label for label in range(self.num_classes) if counts[label] < wanted]
        if not short:
            return
        names = [f"{self.classnames[label]} ({counts[label]})" for label in short]
        classes = f"{self.subset} classes" if self.subset != "all" else "classes"
        message = (
            f"{self.name}: {len(short)} of the {self.num_classes} {classes} have fewer than {wanted} "
            f"{split} images and use all they have ({self.shots}-shot view, seed {self.seed}): "
            f"{', '.join(names[:10])}{f', and {len(names) - 10} more' if len(names) > 10 else ''}."
        )
        # Once per dataset: the same view made again (a run checks its images, then trains
        # on them) is not reported twice.
        reported = _REPORTED_SHORTFALLS.setdefault(self.source, set())
        if message not in reported:
            reported.add(message)
            warnings.warn(message, stacklevel=4)

    @property
    def train(self):
        return self.items("train")

    @property
    def val(self):
        return self.items("val")

    @property
    def test(self):
        return self.items("test")

    def few_shot(self, shots, seed, cache_dir=None):
        """The few-shot view: `shots` images per class for training.

        Train gets `shots` distinct images per class and val `min(shots, 4)`,
        drawn with one `random.Random(seed)` (train first, then val), class
        by class; see `sample_few_shot`. The same seed gives the same images
        on any machine. A class with fewer images keeps all it has; the view
        warns when its train or val images are first read (`items`), naming
        the classes of that view that are short, so that
        `few_shot(16, 1).subsample("base")` names base classes only and a
        protocol that reads no val images hears nothing about them. The
        test split is unchanged.

        Args:
            shots: images per class, >= 1.
            seed: an integer seed (the paper uses 1, 2, 3).
            cache_dir: if given, the choice is recorded there as
                `<name>_shot_<shots>-seed_<seed>.json` (CoOp split-file format,
                `[path, label, class name]` with paths relative to the image
                folder), and read back instead of sampling when the file
                exists, so runs can be audited and repeated.

        Returns:
            A new `ImageDataset`.
        """
        if self.shots is not None:
            raise ValueError(
                f"This is already a {self.shots}-shot view; call few_shot on the dataset "
                "that load_dataset returned."
            )
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
            raise ValueError(f"shots must be an integer >= 1, got {shots!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}.")
        record = None
        if cache_dir is not None:
            filename = f"{_safe(self.name)}_shot_{shots}-seed_{seed}.json"
            record = os.path.join(os.fspath(cache_dir), filename)
        chosen = None
        if record is not None and os.path.exists(record):
            chosen = self._read_record(record, shots, seed)
            if chosen is None:
                warnings.warn(f"{record} is damaged (empty or truncated); sampling the same choice again.",
                              stacklevel=2)
        if chosen is None:
            rng = random.Random(seed)
            chosen = {}
            for split, k in (("train", shots), ("val", min(shots, 4))):
                chosen[split], _ = sample_few_shot(self.source.split(split), k, rng)
            if record is not None:
                self._write_record(record, shots, seed, chosen)
        return ImageDataset(self.source, shots=shots, seed=seed, subset=self.subset, chosen=chosen)

    def subsample(self, subset):
        """The base-to-new view: "all", "base" or "new" classes, relabelled from 0.

        Classes are taken in label order: base is the first ceil(n / 2),
        new the rest. Every split keeps only the images of those classes.

        Args:
            subset: "all", "base" or "new".

        Returns:
            A new `ImageDataset`.
        """
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}.")
        if self.subset != "all" and subset != self.subset:
            raise ValueError(
                f"This is already the {self.subset!r} view; call subsample on the dataset "
                "that holds all classes."
            )
        return ImageDataset(
            self.source, shots=self.shots, seed=self.seed, subset=subset, chosen=self._chosen
        )

    def without(self, paths):
        """This view without the images at `paths` (e.g. corrupt files), in every split.

        Args:
            paths: file paths of items to leave out.

        Returns:
            A new `ImageDataset`.
        """
        paths = set(paths)
        if not paths:
            return self
        chosen = {split: [i for i in items if i.path not in paths] for split, items in self._chosen.items()}
        source = self.source.without(paths)
        _REPORTED_SHORTFALLS[source] = _REPORTED_SHORTFALLS.setdefault(self.source, set())
        return ImageDataset(source, shots=self.shots, seed=self.seed, subset=self.subset, chosen=chosen)

    def to_tf_dataset(
        self,
        split,
        batch_size,
        training,
        image_size=224,
        *,
        cache=False,
        seed=None,
        deterministic=False,
        skip_corrupt=False,
        drop_remainder=False,
        reshuffle_each_iteration=True,
        crop_scale=(0.08, 1.0),
        flip=True,
        items=None,
    ):
        """A `tf.data.Dataset` of (images, labels) for one split.

        Images are float32 pixel values 0..255, [B, image_size, image_size, 3];
        labels int32 [B]; `len()` is the number of batches. Training:
        shuffled each epoch, random resized crop (scale 0.08-1 by default,
        aspect 3/4-4/3, bicubic) and horizontal flip.
        Evaluation: short side resized to `image_size` (bicubic), centre
        crop, in the order of `items(split)` (unless images are skipped).
        Decoding (JPEG, PNG, grey, CMYK, alpha) runs in parallel, batches
        are prefetched.

        Args:
            split: "train", "val" or "test".
            batch_size: images per batch.
            training: augmented and shuffled (True) or evaluation (False).
            image_size: output side length: the backbone's resolution,
                `clip.vision_encoder.image_shape[0]` (224 for ViT-B/16, 32
                for the demo's `mini_clip` and for `random_tiny`).
            cache: keep the encoded images after the first epoch: True in
                memory, or a directory for cache files (named by the split
                and a digest of its items, so views never share one).
                Recommended for few-shot views of TFDS sources, which
                otherwise read through the whole split every epoch.
            seed: seed of shuffling and augmentation (None: random each run).
            deterministic: reproducible output, order included (seed 0 if
                `seed` is None); for tests and audits.
            skip_corrupt: skip images that cannot be decoded, printing a
                warning that names each; by default such an image stops the
                pipeline with an error naming the file. The pipeline's length
                is then unknown: give `fit` a `steps_per_epoch`.
            drop_remainder: drop the last, smaller batch.
            reshuffle_each_iteration: training only; True draws a new order
                and new augmentations on every pass (epoch); False repeats
                the first pass, for one pipeline per epoch whose images must
                not depend on how often it is iterated (resumable and
                distributed runs).
            crop_scale: training only; (low, high) range of the random
                crop's area as a fraction of the image's; the paper's
                (0.08, 1.0) by default. Raise `low` for small images whose
                object fills the frame, where tiny crops show nothing.
            flip: training only; mirror images left to right at random (the
                paper's default); turn off where mirroring changes the class
                (text, digits).
            items: only these items of the split, a sublist of `items(split)`
                in its order (a shard of a distributed evaluation).

        Returns:
            A `tf.data.Dataset`.
        """
        crop_scale = check_crop_scale(crop_scale)
        if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1:
            raise ValueError(
                f"image_size must be the backbone's resolution, a positive integer "
                f"(clip.vision_encoder.image_shape[0]: 224 for ViT-B/16), got {image_size!r}."
            )
        image_size = int(image_size)
        items = self.items(split) if items is None else list(items)
        if not items:
            raise ValueError(
                f"The {split!r} split of {self!r} is empty"
                + (" (TFDS has no such split here; pass tfds_splits= to load_dataset)."
                   if self.source.root is None else ".")
            )
        if cache is not True and cache not in (False, None):
            os.makedirs(cache, exist_ok=True)
            digest = hashlib.sha1(json.dumps(items).encode()).hexdigest()[:16]
            cache = os.path.join(os.fspath(cache), f"{_safe(self.name)}_{split}_{digest}")
        return make_pipeline(
            lambda shuffle, seed, reshuffle: self.source.read(split, items, shuffle, seed, reshuffle),
            len(items),
            batch_size,
            training,
            image_size,
            cache=cache,
            seed=seed,
            deterministic=deterministic,
            skip_corrupt=skip_corrupt,
            drop_remainder=drop_remainder,
            reshuffle_each_iteration=reshuffle_each_iteration,
            crop_scale=crop_scale,
            flip=flip,
        )

    def __repr__(self):
        view = []
        if self.shots is not None:
            view.append(f"{self.shots}-shot seed {self.seed}")
        if self.subset != "all":
            view.append(self.subset)
        sizes = ", ".join(f"{split} {len(self._view_items(split))}" for split in SPLITS)
        return (
            f"<ImageDataset {self.name!r}{' (' + ', '.join(view) + ')' if view else ''}: "
            f"{self.num_classes} classes, {sizes}>"
        )

    # --- few-shot records -------------------------------------------------------

    def _write_record(self, path, shots, seed, chosen):
        names = self.source.classnames
        record = {
            "format": FEW_SHOT_FORMAT,
            "dataset": self.name,
            "shots": shots,
            "seed": seed,
            "sampling": "per class in order of first appearance: random.Random(seed).sample"
                        "(class items, shots) for train, then min(shots, 4) for val",
            **{split: [[self.source.key(i), i.label, names[i.label]] for i in chosen[split]]
               for split in ("train", "val")},
        }
        write_text(path, json.dumps(record, indent=0))

    def _read_record(self, path, shots, seed):
        """The recorded choice, or None when the file is damaged."""
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if (record.get("format"), record.get("shots"), record.get("seed")) != (
            FEW_SHOT_FORMAT, shots, seed,
        ):
            raise ValueError(
                f"{path!r} does not record a {shots}-shot choice with seed {seed} "
                f"(it has shots={record.get('shots')}, seed={record.get('seed')}); "
                "remove it or use another cache_dir."
            )
        chosen = {}
        for split in ("train", "val"):
            by_key = {self.source.key(item): item for item in self.source.split(split)}
            chosen[split] = []
            for key, label, _ in record[split]:
                item = by_key.get(key)
                if item is None or item.label != label:
                    raise ValueError(
                        f"{path!r} lists {key!r} (label {label}), which is not in the {split} "
                        f"split of {self.name!r} with that label: the dataset changed since "
                        "the file was written. Remove the file to sample again."
                    )
                chosen[split].append(item)
        return chosen


def load_dataset(
    name_or_path,
    data_root=None,
    *,
    split_file=None,
    classnames_file=None,
    tfds_splits=None,
    download=False,
):
    """Loads a dataset: one of the paper's, a TFDS builder, or a folder of images.

    - A benchmark name (`"imagenet"`, `"caltech101"`, `"oxford_pets"`,
      `"stanford_cars"`, `"oxford_flowers"`, `"food101"`, `"fgvc_aircraft"`,
      `"sun397"`, `"dtd"`, `"eurosat"`, `"ucf101"`, and the test-only
      `"imagenetv2"`, `"imagenet_sketch"`, `"imagenet_a"`, `"imagenet_r"`;
      CoOp's names like `"OxfordPets"` work too): read from CoOp's folder
      layout under `data_root` (see CoOp's DATASETS.md), with its split
      files, so splits are the paper's.
    - `"tfds:<builder>"` (`"tfds:oxford_iiit_pet"`, `"tfds:eurosat/rgb"`): a
      prepared TensorFlow Datasets builder in `data_root` (TFDS's data dir).
      TFDS's splits are not the paper's.
    - A folder path: one subfolder of images per class (see
      `sources.folder_source` for how splits are made).
    - A name registered with `cocoop_tf.data.named_datasets.register_dataset`.
      The demo registers `"mini_digits_animals"`: a 20-class benchmark (MNIST
      digits and animal silhouettes in a style the demo CLIP never saw),
      written as PNG files under `data_root` (default `~/.cache/cocoop_tf`)
      on first use; see `cocoop_tf.demo.benchmark`.

    Args:
        name_or_path: what to load.
        data_root: the folder that holds the dataset folders (CoOp's $DATA;
            default: the environment variable COCOOP_TF_DATA), or the TFDS
            data dir, or a folder that relative folder paths start from.
        split_file: for folders, a CoOp-format split JSON.
        classnames_file: ImageNet's `classnames.txt`, for ImageNet and its
            domain-shift sets (CoOp layout or TFDS).
        tfds_splits: for TFDS, dict from "train"/"val"/"test" to TFDS splits.
        download: for TFDS, prepare the builder when it is not (downloads).

    Returns:
        An `ImageDataset`.
    """
    name = os.fspath(name_or_path)
    if name.startswith("tfds:"):
        from cocoop_tf.data.tfds_source import TFDSSource

        return ImageDataset(
            TFDSSource(name[len("tfds:"):], data_root, tfds_splits, classnames_file, download)
        )
    named = registered_datasets()
    if name in named:
        make_source, _ = named[name]
        return ImageDataset(make_source(data_root))
    benchmark = find_benchmark(name)
    if benchmark is not None:
        data_root = data_root or os.environ.get(DATA_ROOT_VARIABLE)
        if not data_root:
            raise ValueError(
                f"load_dataset({name!r}) needs data_root (--data-root), the folder that holds the "
                f"datasets in CoOp's layout ($DATA in CoOp's DATASETS.md, {benchmark.docs}), e.g. "
                f"data_root (--data-root) /data with /data/{benchmark.folder}/ inside; or set the "
                f"environment variable {DATA_ROOT_VARIABLE}."
            )
        return ImageDataset(benchmark_source(benchmark, data_root, classnames_file))
    candidates = [os.path.expanduser(name)]
    if data_root and not os.path.isabs(candidates[0]):
        candidates.insert(0, os.path.join(os.fspath(data_root), candidates[0]))
    for path in candidates:
        if os.path.isdir(path):
            return ImageDataset(folder_source(path, split_file))
        if path_problem(path) == "symlink loop":
            raise ValueError(
                f"{path} is a symlink loop (a link that leads back to itself): point it at the "
                "dataset folder, or give the folder itself."
            )
    if os.sep in name or "/" in name or name.startswith((".", "~")):
        raise FileNotFoundError(
            f"No folder {' or '.join(map(repr, candidates))}: expected a folder with one "
            "subfolder of images per class."
        )
    raise ValueError(
        f"Unknown dataset {name!r}. Known datasets: {', '.join([*BENCHMARKS, *named])}; or "
        "'tfds:<builder>' for TensorFlow Datasets, or the path of a folder with one "
        "subfolder of images per class."
    )
