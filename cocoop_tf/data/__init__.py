"""Images and datasets: the paper's benchmarks, TFDS and image folders, as tf.data.

    ds = load_dataset("oxford_pets", data_root="/data")   # CoOp's layout
    base = ds.few_shot(16, seed=1).subsample("base")
    train = base.to_tf_dataset("train", batch_size=32, training=True)
"""

from cocoop_tf.data.benchmarks import BENCHMARKS
from cocoop_tf.data.benchmarks import Benchmark
from cocoop_tf.data.dataset import ImageDataset
from cocoop_tf.data.dataset import load_dataset
from cocoop_tf.data.dataset import sample_few_shot
from cocoop_tf.data.dataset import subset_labels
from cocoop_tf.data.named_datasets import register_dataset
from cocoop_tf.data.sources import Item
from cocoop_tf.data.transforms import decode_image
from cocoop_tf.data.transforms import load_image
from cocoop_tf.data.transforms import random_horizontal_flip
from cocoop_tf.data.transforms import random_resized_crop
from cocoop_tf.data.transforms import resize_and_center_crop
