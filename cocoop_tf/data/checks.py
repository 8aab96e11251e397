"""Finding unusable images before any work starts.

Every image is decoded here as training and evaluation decode it (the same
TensorFlow decoder), so that a file that would fail after hours of training
fails now, or is left out with a line. Before decoding, the file must be a
regular file of bounded size whose header declares a bounded number of
pixels (see `image_files`): a FIFO, a device, a symlink loop or a
decompression bomb is reported without being read or decoded.
"""

import concurrent.futures
import os

import tensorflow as tf

from cocoop_tf.data.image_files import ImageFileError
from cocoop_tf.data.image_files import check_declared_size
from cocoop_tf.data.image_files import read_image_file
from cocoop_tf.data.transforms import decode_checked_image
from cocoop_tf.native_stderr import held_back

_TAIL = 64
# Decoding releases the GIL; a few threads use the cores a check would leave idle.
_THREADS = min(8, os.cpu_count() or 1)


def _ends_whole(kind, data):
    """Whether the data ends as its format ends: a truncated file does not."""
    tail = data[-_TAIL:]
    return {
        "jpeg": b"\xff\xd9" in tail,
        "png": b"IEND" in tail,
        "gif": tail.rstrip(b"\x00").endswith(b";"),
        "bmp": len(data) >= 6 and int.from_bytes(data[2:6], "little") <= len(data),
        "webp": len(data) >= 8 and 8 + int.from_bytes(data[4:8], "little") <= len(data),
    }[kind]


def image_problem(path):
    """Why an image file cannot be used, in a few words, or None if it decodes.

    Args:
        path: the image file.

    Returns:
        None, or a reason such as "truncated JPEG" or "symlink loop: ...".
    """
    try:
        data = read_image_file(path)
        kind = check_declared_size(path, data)
    except ImageFileError as error:
        return error.reason
    try:
        decode_checked_image(tf.constant(data), kind)
    except (tf.errors.OpError, ValueError) as error:
        if not _ends_whole(kind, data):
            return f"truncated {kind.upper()}"
        reason = " ".join(getattr(error, "message", str(error)).split("}}")[-1].split())
        return f"cannot be decoded: {reason}"
    return None


def find_corrupt_images(paths):
    """The image files among `paths` that cannot be used.

    Args:
        paths: image file paths.

    Returns:
        A list of `(path, reason)`, in the order of `paths`.
    """
    paths = list(paths)
    # libjpeg writes its complaints to descriptor 2; the caller names the files.
    with held_back(show_on_error=False), concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
        reasons = list(pool.map(image_problem, paths))
    return [(path, reason) for path, reason in zip(paths, reasons) if reason is not None]


def check_images(items, where, skip=False, log=print):
    """Stops on unusable images, or leaves them out with a line each (`skip`).

    Args:
        items: list of `Item` with file paths.
        where: what the items are, for messages (e.g. "the test split of dtd").
        skip: leave corrupt images out instead of stopping.
        log: function for the lines about skipped images.

    Returns:
        The set of paths to leave out (empty unless `skip`).

    Raises:
        ValueError: naming the first corrupt file, the reason and the fix.
    """
    corrupt = dict(find_corrupt_images([item.path for item in items]))
    if not corrupt:
        return set()
    if not skip:
        path, reason = next(iter(corrupt.items()))
        more = f" ({len(corrupt) - 1} more besides)" if len(corrupt) > 1 else ""
        raise ValueError(
            f"Corrupt image {path} ({reason}) in {where}{more}: replace or delete it, or "
            "leave such images out with --skip-corrupt (skip_corrupt: true in a config "
            "file, RunConfig(skip_corrupt=True) in Python)."
        )
    for path, reason in corrupt.items():
        log(f"  skipping corrupt image {path} ({reason}) in {where}")
    return set(corrupt)
