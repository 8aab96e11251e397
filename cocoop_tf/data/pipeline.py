"""tf.data input pipelines: read, decode, augment, batch, prefetch.

Images come out as float32 pixel values 0..255, [batch, size, size, 3], the
models' input convention; labels as int32 [batch].

Randomness: each record gets its own seed from `tf.data.Dataset.random`
before the parallel map, and the crop and flip are stateless functions of
that seed, so with a fixed `seed` the augmented images do not depend on
thread scheduling; `deterministic=True` also fixes the order in which the
parallel stages deliver them.

Corrupt images: decoding runs inside a per-record dataset whose failure is
caught (`ignore_errors`) and flagged, so the pipeline knows which file failed.
By default it then stops with an error naming the file; with
`skip_corrupt=True` it drops the image and prints a warning naming it. A
PNG, GIF, BMP or WebP that declares more pixels than `MAX_IMAGE_PIXELS`, and
a file of another format (whatever its name), count as corrupt, before any
decoding (see `transforms.decode_image`).
"""

import sys

import numpy as np
import tensorflow as tf

from cocoop_tf.data.image_files import DECODED_NAMES
from cocoop_tf.data.transforms import decode_image
from cocoop_tf.data.transforms import random_horizontal_flip
from cocoop_tf.data.transforms import random_resized_crop
from cocoop_tf.data.transforms import resize_and_center_crop

AUTOTUNE = tf.data.AUTOTUNE
# Cached records are shuffled in memory; few-shot sets fit whole (16 x 1000).
SHUFFLE_BUFFER = 16384


def read_files(paths, labels, shuffle=False, seed=None, reshuffle_each_iteration=True):
    """Records of image files: a `tf.data.Dataset` of (path, bytes, label).

    Args:
        paths: list of file paths.
        labels: list of int labels.
        shuffle: visit the files in a new random order each epoch (the
            paths are shuffled before any file is read).
        seed: shuffling seed.
        reshuffle_each_iteration: False: every pass uses the same order.
    """
    records = tf.data.Dataset.from_tensor_slices(
        (tf.constant(list(paths), tf.string, shape=[len(paths)]), np.asarray(labels, np.int32))
    )
    if shuffle:
        records = records.shuffle(
            max(len(paths), 1), seed=seed, reshuffle_each_iteration=reshuffle_each_iteration
        )
    return records.map(
        lambda path, label: (path, tf.io.read_file(path), label), num_parallel_calls=AUTOTUNE
    )


def make_pipeline(
    read,
    num_records,
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
):
    """Builds the batched image pipeline over records of encoded images.

    Training: shuffled every epoch, random resized crop (scale 0.08-1 by
    default, aspect 3/4-4/3, bicubic) and random horizontal flip. Evaluation: the
    short side resized to `image_size` (bicubic), centre crop; the order of
    the records is kept.

    Args:
        read: `read(shuffle, seed, reshuffle_each_iteration)` returning a `tf.data.Dataset` of
            (name, encoded image bytes, int32 label), e.g. from `read_files`.
        num_records: how many records `read` yields.
        batch_size: images per batch.
        training: training (augmented, shuffled) or evaluation pipeline.
        image_size: side of the output images.
        cache: keep the encoded bytes after the first epoch: True in memory,
            or a file path prefix for a cache on disk. Decoding and
            augmentation still run every epoch.
        seed: seed of the shuffling and the augmentation (None: random).
        deterministic: reproducible output (order included); uses seed 0
            when `seed` is None.
        skip_corrupt: drop images that cannot be decoded, with a printed
            warning naming each, instead of stopping with an error.
        drop_remainder: drop the last, smaller batch.
        reshuffle_each_iteration: training only; False makes every pass
            over the dataset repeat the same order and augmentation.
        crop_scale: training only; range of the random crop's area as a
            fraction of the image's (the paper's 0.08-1 by default).
        flip: training only; mirror images left to right at random.

    Returns:
        A `tf.data.Dataset` of (images float32 [B, S, S, 3] in 0..255,
        labels int32 [B]).
    """
    if deterministic and seed is None:
        seed = 0
    ordered = deterministic or not training
    if cache is not False and cache is not None:
        records = read(False, None, True).cache("" if cache is True else str(cache))
        if training:
            buffer = max(min(num_records, SHUFFLE_BUFFER), 1)
            records = records.shuffle(buffer, seed=seed, reshuffle_each_iteration=reshuffle_each_iteration)
    else:
        records = read(training, seed, reshuffle_each_iteration)

    if training:
        seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=reshuffle_each_iteration
        ).batch(2)
        records = tf.data.Dataset.zip(records, seeds).map(lambda r, s: (*r, s))
    else:
        no_seed = tf.zeros([2], tf.int64)
        records = records.map(lambda name, data, label: (name, data, label, no_seed))

    decoded = records.interleave(
        _decode_flagged,
        cycle_length=AUTOTUNE,
        num_parallel_calls=AUTOTUNE,
        deterministic=ordered,
    )
    if skip_corrupt:
        decoded = decoded.filter(_keep_or_warn)

    def transform(name, image, ok, label, element_seed):
        if not skip_corrupt:
            check = tf.debugging.Assert(ok, [
                "Cannot decode the image file", name,
                f"(corrupt, truncated, too many pixels, or not {DECODED_NAMES}). Replace or "
                "remove it, or skip such images with a warning: --skip-corrupt on the command "
                "line, skip_corrupt=True in Python.",
            ])
            with tf.control_dependencies([check]):
                image = tf.identity(image)
        if training:
            seeds = tf.random.experimental.stateless_split(element_seed, 2)
            crop_seed, flip_seed = tf.unstack(seeds)
            image = random_resized_crop(image, image_size, crop_seed, scale=crop_scale)
            if flip:
                image = random_horizontal_flip(image, flip_seed)
        else:
            image = resize_and_center_crop(image, image_size)
        image.set_shape([image_size, image_size, 3])
        return image, label

    batches = decoded.map(transform, num_parallel_calls=AUTOTUNE, deterministic=ordered)
    batches = batches.batch(batch_size, drop_remainder=drop_remainder)
    if not skip_corrupt:
        # Declared, so that `len()` works and Keras' `fit` knows where an epoch
        # ends (it would otherwise count one more optimiser step each epoch,
        # and the per-epoch learning-rate schedule would drift).
        count = num_records // batch_size if drop_remainder else -(-num_records // batch_size)
        batches = batches.apply(tf.data.experimental.assert_cardinality(count))
    batches = batches.prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = ordered
    return batches.with_options(options)


def _decode_flagged(name, data, label, seed):
    """One record as a one-element dataset: (name, image, decoded_ok, label, seed)."""
    decoded = tf.data.Dataset.from_tensors(data).map(decode_image).ignore_errors()
    decoded = decoded.map(lambda image: (image, True))
    failed = tf.data.Dataset.from_tensors((tf.zeros([1, 1, 3], tf.uint8), False))
    return decoded.concatenate(failed).take(1).map(
        lambda image, ok: (name, image, ok, label, seed)
    )


def _keep_or_warn(name, image, ok, label, seed):
    def warn():
        message = tf.strings.join(["WARNING: skipping the image file ", name,
                                   ", which cannot be decoded (corrupt, truncated, too many pixels, or "
                                   f"not {DECODED_NAMES})."])
        with tf.control_dependencies([tf.print(message, output_stream=sys.stderr)]):
            return tf.constant(False)

    return tf.cond(ok, lambda: tf.constant(True), warn)
