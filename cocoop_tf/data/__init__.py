"""Images and datasets: the paper's benchmarks, TFDS and image folders, as tf.data.

    ds = load_dataset("oxford_pets", data_root="/data")   # CoOp's layout
    base = ds.few_shot(16, seed=1).subsample("base")
    train = base.to_tf_dataset("train", batch_size=32, training=True)

The names load their modules on first use (PEP 562): the benchmarks'
names (`benchmarks`) and the registry of named datasets (`named_datasets`)
cost nothing to import.
"""

from cocoop_tf.lazy_exports import lazy_exports

# Public name -> the module that defines it.
_EXPORTS = {
    "BENCHMARKS": "cocoop_tf.data.benchmarks",
    "Benchmark": "cocoop_tf.data.benchmarks",
    "ImageDataset": "cocoop_tf.data.dataset",
    "load_dataset": "cocoop_tf.data.dataset",
    "sample_few_shot": "cocoop_tf.data.dataset",
    "subset_labels": "cocoop_tf.data.dataset",
    "register_dataset": "cocoop_tf.data.named_datasets",
    "Item": "cocoop_tf.data.sources",
    "decode_image": "cocoop_tf.data.transforms",
    "load_image": "cocoop_tf.data.transforms",
    "random_horizontal_flip": "cocoop_tf.data.transforms",
    "random_resized_crop": "cocoop_tf.data.transforms",
    "resize_and_center_crop": "cocoop_tf.data.transforms",
}

__getattr__, __dir__, __all__ = lazy_exports(globals(), _EXPORTS)
