"""TensorFlow Datasets builders as a source (`load_dataset("tfds:<builder>")`).

TFDS is a convenience, not the paper's protocol: its train/val/test splits
are not CoOp's split files, so numbers on them are not comparable to the
paper's. Class names and label order are mapped to CoOp's where the builder
holds one of the paper's datasets (Caltech101 reordered as CoOp sorts its
folders, pets lower-cased, EuroSAT and SUN397 renamed, ImageNet WordNet ids
turned into names), so base/new classes are the paper's.

Data is read from an already prepared builder (`tfds build`, or archives
placed in TFDS's manual folder and prepared); nothing is downloaded unless
`download=True`. Items are identified by TFDS's stable record ids
(`tfds_id`), so few-shot choices can be recorded and repeated.
"""

import warnings

import numpy as np
import tensorflow as tf

from cocoop_tf.data.benchmarks import DEFAULT_TEMPLATE
from cocoop_tf.data.benchmarks import EUROSAT_CLASSNAMES
from cocoop_tf.data.benchmarks import find_tfds_benchmark
from cocoop_tf.data.pipeline import SHUFFLE_BUFFER
from cocoop_tf.data.sources import SPLITS
from cocoop_tf.data.sources import Item
from cocoop_tf.data.sources import Source
from cocoop_tf.data.sources import read_classnames_file

CALTECH_DROPPED = ("background_google", "faces_easy")
# CoOp sorts Caltech101's folder names, where the capitalised ones
# ("Faces", "Leopards", "Motorbikes") come first; TFDS lower-cases them.
CALTECH_FIRST = ("faces", "leopards", "motorbikes")
CALTECH_RENAMED = {
    "airplanes": "airplane", "faces": "face", "leopards": "leopard", "motorbikes": "motorbike",
}
IMAGENET_FAMILY = ("imagenet", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
# TFDS labels these with all 1000 ImageNet classes; the paper uses the 200 present.
PRESENT_CLASSES_ONLY = ("imagenet_a", "imagenet_r")


def tfds_classnames(benchmark_name, names, classnames_file=None):
    """CoOp's class names and label order for a TFDS builder's label names.

    Args:
        benchmark_name: the paper dataset the builder holds (or None).
        names: the builder's label names, in TFDS label order.
        classnames_file: for the ImageNet family, CoOp's `classnames.txt`
            (lines "n01440764 tench"); without it, keras-hub's ImageNet names.

    Returns:
        `(classnames, kept)`: class names in label order, and for each class
        the TFDS label it comes from.
    """
    kept = list(range(len(names)))
    if benchmark_name == "caltech101":
        kept = [i for i, n in enumerate(names) if n not in CALTECH_DROPPED]
        kept.sort(key=lambda i: (names[i] not in CALTECH_FIRST, names[i]))
        return [CALTECH_RENAMED.get(names[i], names[i]) for i in kept], kept
    if benchmark_name == "oxford_pets":
        return [n.lower() for n in names], kept
    if benchmark_name == "eurosat":
        return [EUROSAT_CLASSNAMES.get(n, n) for n in names], kept
    if benchmark_name == "sun397":
        # "/b/bakery/shop" -> "shop bakery", as CoOp names SUN397's classes.
        return [" ".join(n.strip("/").split("/")[1:][::-1]) for n in names], kept
    if benchmark_name in IMAGENET_FAMILY:
        return _imagenet_names(names, classnames_file), kept
    return list(names), kept


def _imagenet_names(wnids, classnames_file):
    if classnames_file is not None:
        table = read_classnames_file(classnames_file)
        missing = [w for w in wnids if w not in table]
        if missing:
            raise ValueError(f"{classnames_file!r} lacks WordNet ids {missing[:5]}.")
        return [table[w] for w in wnids]
    warnings.warn(
        "Using keras-hub's ImageNet class names; CoOp uses CLIP's cleaned names from "
        "its classnames.txt (see CoOp's DATASETS.md). Pass classnames_file= to use them.",
        stacklevel=4,
    )
    from keras_hub.utils import imagenet_id_to_name

    return [imagenet_id_to_name(i) for i in range(len(wnids))]


def _record_order(tfds_id):
    # "name-train.tfrecord-00003-of-00016__127": shard file, then index in it.
    shard, _, index = tfds_id.rpartition("__")
    return shard, int(index)


class TFDSSource(Source):
    """A prepared TensorFlow Datasets builder as a dataset source.

    Args:
        spec: builder name, optionally with config and version
            (`"eurosat/rgb"`, `"oxford_iiit_pet:4.0.0"`).
        data_dir: TFDS data folder (default: TFDS's, `~/tensorflow_datasets`).
        splits: dict from "train", "val", "test" to TFDS split names or
            slices (`{"train": "train[:80%]", "test": "train[80%:]"}`).
            Default: train = "train", val = "validation", test = "test",
            else "validation" (then val and test are the same images, as
            CoOp's ImageNet); a split TFDS lacks is empty.
        classnames_file: ImageNet `classnames.txt` for the ImageNet family.
        download: prepare the builder if it is not (downloads the data, or
            builds it from archives placed in TFDS's manual folder).
    """

    def __init__(self, spec, data_dir=None, splits=None, classnames_file=None, download=False):
        import tensorflow_datasets as tfds

        self._tfds = tfds
        try:
            builder = tfds.builder(spec, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise ValueError(
                f"TensorFlow Datasets has no builder {spec!r} and no prepared dataset of that "
                f"name is in {data_dir or 'the default data folder'}. See "
                "https://www.tensorflow.org/datasets/catalog for the names; the paper's "
                "datasets are imagenet2012, caltech101, oxford_iiit_pet, cars196, "
                "oxford_flowers102, food101, sun397, dtd, eurosat/rgb, imagenet_v2, "
                "imagenet_sketch, imagenet_a, imagenet_r."
            ) from None
        benchmark = find_tfds_benchmark(spec)
        if not builder.is_prepared():
            if not download:
                raise FileNotFoundError(
                    f"The TFDS dataset {spec!r} is not prepared: expected it in "
                    f"{builder.data_dir}. Prepare it once with `tfds build {spec}"
                    f"{f' --data_dir {data_dir}' if data_dir else ''}` (this downloads it; "
                    "for ImageNet, first place the archives in <data_dir>/downloads/manual/), "
                    "or pass download=True."
                )
            builder.download_and_prepare()
        self._builder = builder
        self._image_key, self._label_key = builder.info.supervised_keys or ("image", "label")
        names = builder.info.features[self._label_key].names
        classnames, self._kept = tfds_classnames(
            benchmark and benchmark.name, names, classnames_file
        )
        available = set(builder.info.splits.keys())
        if splits is None:
            fallback_test = "validation" if "validation" in available else None
            splits = {
                "train": "train" if "train" in available else None,
                "val": "validation" if "validation" in available else None,
                "test": "test" if "test" in available else fallback_test,
            }
        self._tfds_splits = {split: splits.get(split) for split in SPLITS}
        self._scanned = {}
        if benchmark is not None:
            warnings.warn(
                f"TFDS's {spec!r} splits are not CoOp's: results are not comparable to the "
                f"paper's. For its splits use load_dataset({benchmark.name!r}, data_root=...) "
                "with CoOp's folder layout and split files.",
                stacklevel=3,
            )
        if benchmark is not None and benchmark.name in PRESENT_CLASSES_ONLY:
            present = {label for _, label in self._scan(self._tfds_splits["test"])}
            name_of = dict(zip(self._kept, classnames))
            self._kept = [k for k in self._kept if k in present]
            classnames = [name_of[k] for k in self._kept]
        super().__init__(
            name=spec,
            classnames=classnames,
            splits={},
            template=benchmark.template if benchmark else DEFAULT_TEMPLATE,
        )

    def _scan(self, tfds_split):
        """(tfds_id, TFDS label) of every record of a split, in record order."""
        if tfds_split is None:
            return []
        if tfds_split not in self._scanned:
            records = self._as_dataset(tfds_split, shuffle=False)
            records = records.map(lambda ex: (ex["tfds_id"], ex[self._label_key]))
            pairs = []
            for ids, labels in records.batch(4096).as_numpy_iterator():
                pairs += zip((i.decode() for i in ids), labels.tolist())
            self._scanned[tfds_split] = sorted(pairs, key=lambda p: _record_order(p[0]))
        return self._scanned[tfds_split]

    def split(self, split):
        """The items of one split, read from the records' labels (one pass, then kept)."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
        new_label = {old: new for new, old in enumerate(self._kept)}
        return [
            Item(tfds_id, new_label[label])
            for tfds_id, label in self._scan(self._tfds_splits[split])
            if label in new_label
        ]

    def read(self, split, items, shuffle=False, seed=None, reshuffle_each_iteration=True):
        """The items' encoded images, a `tf.data.Dataset` of (tfds_id, bytes, label)."""
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant([i.path for i in items], tf.string),
                tf.constant(np.asarray([i.label for i in items], np.int32)),
            ),
            default_value=-1,
        )
        # Shuffled shard files come in a new order each pass; a fixed order reads them in turn.
        records = self._as_dataset(self._tfds_splits[split], shuffle and reshuffle_each_iteration, seed)
        records = records.map(
            lambda ex: (ex["tfds_id"], ex[self._image_key], table.lookup(ex["tfds_id"])),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        records = records.filter(lambda name, data, label: label >= 0)
        if shuffle:
            buffer = max(min(len(items), SHUFFLE_BUFFER), 1)
            records = records.shuffle(buffer, seed=seed, reshuffle_each_iteration=reshuffle_each_iteration)
        return records

    def _as_dataset(self, tfds_split, shuffle, seed=None):
        tfds = self._tfds
        read_config = tfds.ReadConfig(
            add_tfds_id=True,
            try_autocache=False,
            shuffle_seed=seed,
            # Unshuffled, read the shard files one after another: record order.
            interleave_cycle_length=16 if shuffle else 1,
        )
        return self._builder.as_dataset(
            split=tfds_split,
            shuffle_files=shuffle,
            read_config=read_config,
            decoders={self._image_key: tfds.decode.SkipDecoding()},
        )
