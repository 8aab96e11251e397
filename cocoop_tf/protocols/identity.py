"""What a run is made of, as short digests: its data, its prompt files, its checkpoints' records.

`run.json` holds these beside the settings, so `--resume` refuses a folder
whose run was made of other data, other prompt files or other backbone
weights, instead of mixing the two runs' numbers.
"""

import hashlib
import json
import os
import struct

from cocoop_tf.data.sources import SPLITS

# A prompt file's header is a few kB (its config, class names and records).
_MAX_HEADER_BYTES = 16 << 20


def data_fingerprint(dataset, splits=SPLITS, left_out=()):
    """A digest of a dataset's identity: its class names and the images of some splits.

    Image paths are taken relative to the dataset's image folder, so the same
    files under another data root (another machine, a moved disk) give the
    same digest; the images' contents are not read.

    Args:
        dataset: an `ImageDataset` (from `load_dataset`).
        splits: the splits that count ("train", "val", "test").
        left_out: paths of images left out of the run (`skip_corrupt`).

    Returns:
        16 hexadecimal digits.
    """
    source = dataset.source
    left_out = set(left_out)
    prefix = None if source.root is None else os.path.join(source.root, "")
    digest = hashlib.sha256(json.dumps(list(source.classnames)).encode())
    for split in splits:
        digest.update(f"\n{split}\n".encode())
        for item in source.split(split):
            if item.path in left_out:
                continue
            # A slice where it can (relpath costs seconds on ImageNet's 1.28 M images).
            key = item.path[len(prefix):] if prefix and item.path.startswith(prefix) else source.key(item)
            digest.update(f"{key}\t{item.label}\n".encode())
    return digest.hexdigest()[:16]


def file_digest(path):
    """The SHA-256 of a file's contents (read in blocks), as 16 hexadecimal digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def safetensors_metadata(path):
    """The metadata strings of a safetensors file, read from its header alone; None when the
    file is not a regular file with a whole, sane header."""
    try:
        if not os.path.isfile(path):
            return None
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if length > min(_MAX_HEADER_BYTES, size - 8):
                return None
            header = json.loads(f.read(length))
        metadata = header.get("__metadata__", {}) if isinstance(header, dict) else None
        return metadata if isinstance(metadata, dict) else None
    except (OSError, ValueError, RecursionError):
        return None
