"""Fixture builders for the data tests: tiny images and CoOp-layout folders."""

import json
import os
import struct

import numpy as np
import tensorflow as tf


def write_image(path, seed=0, size=(8, 10), kind=None, value=None):
    """Writes a small image (JPEG or PNG by extension; RGB noise or a constant)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    kind = kind or ("png" if str(path).lower().endswith(".png") else "jpeg")
    channels = {"grey": 1, "rgba": 4}.get(kind, 3)
    if value is None:
        pixels = np.random.default_rng(seed).integers(0, 256, (*size, channels), dtype=np.uint8)
    else:
        pixels = np.full((*size, channels), value, np.uint8)
    if kind == "jpeg":
        data = tf.io.encode_jpeg(pixels, quality=95)
    else:
        data = tf.io.encode_png(pixels)
    tf.io.write_file(str(path), data)
    return str(path)


def _segments(jpeg):
    """A baseline JPEG's header segments (marker, payload) and its scan data."""
    pos, segments = 2, []
    while True:
        marker = jpeg[pos + 1]
        length = struct.unpack(">H", jpeg[pos + 2 : pos + 4])[0]
        payload = jpeg[pos + 4 : pos + 2 + length]
        pos += 2 + length
        if marker == 0xDA:
            return segments, jpeg[pos:-2]
        segments.append((marker, payload))


def cmyk_jpeg(c, m, y, k, size=(8, 8)):
    """An Adobe CMYK JPEG of constant planes, built from four grey JPEG scans.

    TensorFlow cannot encode CMYK and PIL may be absent, so the file is
    assembled by hand: a four-component baseline frame with one scan per
    component, each scan taken from a grey JPEG of that plane (they share
    the standard quantisation and Huffman tables).
    """
    scans, tables = [], None
    for value in (c, m, y, k):
        grey = tf.io.encode_jpeg(np.full((*size, 1), value, np.uint8), quality=95).numpy()
        segments, scan = _segments(grey)
        shared = [s for s in segments if s[0] in (0xDB, 0xC4)]
        assert tables is None or shared == tables
        tables = shared
        scans.append(scan)

    def segment(marker, payload):
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    out = b"\xff\xd8" + segment(0xEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0))
    out += b"".join(segment(marker, payload) for marker, payload in tables)
    components = b"".join(bytes([i + 1, 0x11, 0]) for i in range(4))
    out += segment(0xC0, struct.pack(">BHHB", 8, size[0], size[1], 4) + components)
    for i, scan in enumerate(scans):
        out += segment(0xDA, bytes([1, i + 1, 0x00, 0, 63, 0])) + scan
    return out + b"\xff\xd9"


def write_split_layout(folder, image_dir, split_name, classes, relpath):
    """Writes images and a CoOp split file.

    Args:
        folder: the dataset folder.
        image_dir: image folder inside it.
        split_name: split file name.
        classes: list of (class name, (n_train, n_val, n_test)).
        relpath: relpath(classname, split, index) -> path relative to image_dir.

    Returns:
        The split dict as written.
    """
    split = {"train": [], "val": [], "test": []}
    seed = 0
    for label, (name, counts) in enumerate(classes):
        for part, n in zip(("train", "val", "test"), counts):
            for i in range(n):
                rel = relpath(name, part, i)
                write_image(os.path.join(folder, image_dir, rel), seed=seed)
                seed += 1
                split[part].append([rel, label, name])
    with open(os.path.join(folder, split_name), "w") as f:
        json.dump(split, f)
    return split


def write_class_folders(folder, counts, ext=".jpg"):
    """Writes {class: n images} as one subfolder per class; returns the paths."""
    paths = {}
    seed = 100
    for name, n in counts.items():
        paths[name] = []
        for i in range(n):
            paths[name].append(write_image(os.path.join(folder, name, f"{i:03d}{ext}"), seed=seed))
            seed += 1
    return paths


WNIDS = {
    "n01440764": "tench",
    "n01443537": "goldfish",
    "n01484850": "great white shark",
    "n01491361": "tiger shark",
    "n01494475": "hammerhead shark",
}


def write_classnames(path, names=WNIDS):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(f"{wnid} {name}\n" for wnid, name in names.items())
