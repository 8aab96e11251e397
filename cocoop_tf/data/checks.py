"""Finding unreadable images before any work starts.

Decoding every test image up front would cost as much as an evaluation, so
each file gets a cheap structural check instead: it can be read, it starts
with an image format's signature, and it ends as that format ends (a JPEG's
end-of-image marker, a PNG's IEND chunk), which is what a truncated download
or an interrupted copy lacks. Only a file that fails the check is decoded,
so an unusual but valid file (a JPEG with trailing bytes, say) is never
reported.
"""

import os

import tensorflow as tf

from cocoop_tf.data.transforms import load_image
from cocoop_tf.native_stderr import held_back

_SIGNATURES = {
    b"\xff\xd8": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"BM": "bmp",
}
_TAIL = 64


def _looks_whole(path):
    """`None` if the file looks like a whole image, else the reason it does not."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(size - _TAIL, 0))
            tail = f.read()
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    if size == 0:
        return "empty file"
    kind = next((k for signature, k in _SIGNATURES.items() if head.startswith(signature)), None)
    if kind is None:
        return "not a JPEG, PNG, GIF or BMP file"
    whole = {
        "jpeg": b"\xff\xd9" in tail,
        "png": b"IEND" in tail,
        "gif": tail.rstrip(b"\x00").endswith(b";"),
        "bmp": len(head) >= 6 and int.from_bytes(head[2:6], "little") <= size,
    }[kind]
    return None if whole else f"truncated {kind.upper()}"


def _decodes(path):
    try:
        with held_back(show_on_error=False):  # libjpeg's own complaint; the caller names the file
            load_image(path)
        return True
    except (OSError, ValueError, tf.errors.OpError):
        return False


def find_corrupt_images(paths):
    """The image files among `paths` that cannot be decoded.

    Args:
        paths: image file paths.

    Returns:
        A list of `(path, reason)`, in the order of `paths`.
    """
    corrupt = []
    for path in paths:
        reason = _looks_whole(path)
        if reason is not None and (reason.startswith("cannot") or not _decodes(path)):
            corrupt.append((path, reason))
    return corrupt


def check_images(items, where, skip=False, log=print):
    """Stops on unreadable images, or leaves them out with a line each (`skip`).

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
            "pass --skip-corrupt (skip_corrupt: true in a config file) to leave such "
            "images out."
        )
    for path, reason in corrupt.items():
        log(f"  skipping corrupt image {path} ({reason}) in {where}")
    return set(corrupt)
