"""Throughput of the training input pipeline, in images per second.

Writes a temporary class-per-folder dataset of photo-like JPEGs (500x375 by
default), then times `ImageDataset.to_tf_dataset(..., training=True)` at
224x224 (decode, random resized crop, flip, batch) for several batch sizes,
with and without the in-memory cache of encoded images, after one warm-up
epoch. Prints the machine and a table.

    python benchmarks/data_pipeline.py [--images 500] [--epochs 3]
"""

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cocoop_tf.data import load_dataset  # noqa: E402


def write_photos(folder, count, width, height, classes=10, seed=0):
    """Smooth random colour fields with fine noise: JPEG sizes like real photos."""
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(count):
        coarse = rng.uniform(0, 255, (1, 6, 8, 3)).astype("float32")
        image = tf.image.resize(coarse, (height, width), method="bicubic")[0]
        image += rng.normal(0, 12, (height, width, 3)).astype("float32")
        data = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality=90)
        path = os.path.join(folder, "train", f"class_{i % classes:02d}", f"{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, data)
        total += len(data.numpy())
    os.makedirs(os.path.join(folder, "test"), exist_ok=True)
    return total / count


def images_per_second(dataset, epochs):
    for _ in dataset:  # warm-up epoch (fills the cache when there is one)
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _ in dataset:
            count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def describe_machine():
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{model}; {usable} usable cores ({os.cpu_count()} logical); "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per setting")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        mean_bytes = write_photos(folder, args.images, args.width, args.height)
        ds = load_dataset(folder)
        print(f"Machine: {describe_machine()}")
        print(f"Data: {len(ds.train)} JPEGs of {args.width}x{args.height} "
              f"(mean {mean_bytes / 1024:.0f} KiB), output {args.size}x{args.size}, "
              f"{args.epochs} timed epochs after one warm-up epoch\n")
        print("| pipeline | batch size | cache | images/s |")
        print("|---|---|---|---|")
        for training in (True, False):
            for batch_size in args.batch_sizes:
                for cache in (False, True):
                    data = ds.to_tf_dataset(
                        "train", batch_size, training=training, image_size=args.size, cache=cache
                    )
                    rate = images_per_second(data, args.epochs)
                    kind = "training (crop+flip)" if training else "evaluation (resize+centre crop)"
                    cached = "memory" if cache else "off"
                    print(f"| {kind} | {batch_size} | {cached} | {rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
