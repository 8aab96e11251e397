"""Hostile image files and split files: refused or skipped by name, before any work, in bounded memory."""

import contextlib
import json
import os
import re
import struct
import threading
import zlib

import numpy as np
import pytest
import tensorflow as tf

from conftest import memory_limit
from test_data_helpers import write_image
from test_data_helpers import write_split_layout

from cocoop_tf.data import load_dataset
from cocoop_tf.data import load_image
from cocoop_tf.data.checks import find_corrupt_images
from cocoop_tf.data.image_files import MAX_IMAGE_BYTES
from cocoop_tf.data.image_files import MAX_IMAGE_PIXELS
from cocoop_tf.protocols import load_predictions


@contextlib.contextmanager
def fifo_watchdog(fifo, seconds):
    """Yields a list that names `fifo` if a read of it blocked for `seconds`.

    A signal cannot interrupt a read blocked in one of TensorFlow's threads,
    so the watchdog opens the FIFO for writing (which succeeds only while a
    reader waits) and closes it: the reader gets an empty file, and the hang
    becomes a failed assertion instead of a stalled test run.
    """
    released, stop = [], threading.Event()

    def watch():
        stop.wait(seconds)
        while not stop.is_set():
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                released.append(str(fifo))
            except OSError:  # no reader waiting
                pass
            stop.wait(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield released
    finally:
        stop.set()
        thread.join()


def png_bomb(path, side=9500):
    """A valid grey PNG of side x side pixels (above PIL's bound), a few hundred KB."""
    rows = bytes(side + 1) * 500  # filter byte 0, black pixels
    packer = zlib.compressobj(1)
    idat = b"".join([packer.compress(rows) for _ in range(side // 500)] + [packer.flush()])

    def chunk(kind, payload):
        checksum = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + checksum

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def gif_frames_bomb(path, frames=2, side=7000):
    """A 1 x 1 GIF canvas with large frames: the decoder holds every frame."""
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0) + b"\x02\x02\x4c\x01\x00"
    path.write_bytes(b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + bytes(6) + frame * frames + b";")
    return path


def webp_bomb(path, extended=False, side=16000):
    """A WebP header declaring side x side pixels (above PIL's bound), lossless or extended, a few bytes long."""
    bits = (side - 1) | ((side - 1) << 14)
    lossless = b"VP8L" + struct.pack("<I", 69) + bytes([0x2F]) + struct.pack("<I", bits) + bytes(64)
    chunk = lossless
    if extended:  # the canvas declared in a VP8X chunk before a small bitstream
        chunk = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (side - 1).to_bytes(3, "little") * 2 + lossless
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk)
    return path


def animated_webp(path):
    """Two RGB frames: TensorFlow decodes such an animation into a buffer too small for it."""
    from PIL import Image

    frames = [Image.fromarray(np.full((8, 8, 3), value, np.uint8)) for value in (0, 255)]
    frames[0].save(path, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    assert path.read_bytes()[12:16] == b"VP8X" and path.read_bytes()[20] & 0x02  # the animation flag
    return path


def jpeg_xl(path):
    """The start of a JPEG XL codestream: TensorFlow would decode it, and nothing here bounds its size."""
    path.write_bytes(b"\xff\x0a" + bytes(64))
    return path


def bad_scan_jpeg(path):
    """A JPEG with a whole header and end marker whose scan holds a frame marker: TF fails to decode it."""
    data = tf.io.encode_jpeg(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)).numpy()
    scan = data.index(b"\xff\xda")
    scan += 2 + struct.unpack(">H", data[scan + 2 : scan + 4])[0]
    path.write_bytes(data[: scan + 10] + b"\xff\xc0" + data[scan + 10 :])
    return path


def hostile_files(folder):
    """One file of each kind the check must refuse, by name, and why."""
    folder.mkdir(parents=True, exist_ok=True)
    bad = bad_scan_jpeg(folder / "bad.jpg")
    bomb = png_bomb(folder / "bomb.png")
    fifo = folder / "fifo.jpg"
    os.mkfifo(fifo)
    loop = folder / "loop.jpg"
    loop.symlink_to("loop.jpg")
    zero = folder / "zero.jpg"
    zero.symlink_to("/dev/zero")
    return {
        bad: "cannot be decoded",
        bomb: "declares 9500 x 9500 pixels, more than the 89,478,485",
        fifo: "not a regular file but a named pipe (FIFO)",
        loop: "symlink loop",
        zero: "not a regular file but a device",
    }


def test_image_check_names_each_hostile_file_without_reading_or_decoding_it(tmp_path):
    hostile = hostile_files(tmp_path / "x")
    frames = gif_frames_bomb(tmp_path / "x" / "frames.gif")
    hostile[frames] = "declares 1 x 1 pixels (98,000,001 in all its frames)"
    big = tmp_path / "x" / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)  # sparse: nothing is written, nothing may be read
    hostile[big] = f"{MAX_IMAGE_BYTES + 1:,} bytes, more than the {MAX_IMAGE_BYTES:,}"
    (tmp_path / "x" / "folder.jpg").mkdir()
    hostile[tmp_path / "x" / "folder.jpg"] = "not a regular file but a folder"
    # Holding: a link to a regular file, and a JPEG with bytes after its end.
    good = write_image(tmp_path / "elsewhere" / "good.jpg")
    (tmp_path / "x" / "link.jpg").symlink_to(good)
    trailing = tmp_path / "x" / "trailing.jpg"
    trailing.write_bytes(open(good, "rb").read() + b"\x00" * 100)
    paths = sorted(hostile) + [tmp_path / "x" / "link.jpg", trailing]
    with memory_limit(), fifo_watchdog(tmp_path / "x" / "fifo.jpg", 30) as hung:
        found = dict(find_corrupt_images([str(p) for p in paths]))
        # What the `classify` command reads goes through the same gate.
        with pytest.raises(ValueError, match=r"Cannot decode .*fifo.jpg.* as an image: not a regular file but a named pipe \(FIFO\)"):
            load_image(tmp_path / "x" / "fifo.jpg")
        with pytest.raises(ValueError, match="Cannot decode .*bomb.png.* as an image: declares 9500 x 9500 pixels"):
            load_image(tmp_path / "x" / "bomb.png")
    assert not hung, f"reading {hung} blocked"
    assert sorted(found) == sorted(map(str, hostile))
    for path, reason in hostile.items():
        assert reason in found[str(path)], (path, found[str(path)])
    assert MAX_IMAGE_PIXELS == 89_478_485  # PIL's bound


def test_hostile_images_stop_the_run_before_it_starts_or_are_skipped(tmp_path, cli_here):
    images = tmp_path / "my_images"
    for split, count in (("train", 2), ("test", 2)):
        for name in ("cat", "dog"):
            for i in range(count):
                write_image(images / split / name / f"{i:03d}.jpg", seed=i + 10 * len(name))
    hostile = hostile_files(images / "test" / "cat")
    arguments = ["train", "--dataset", images, "--backbone", "random_tiny", "--seeds", 1, "--shots", 1,
                 "--epochs", 1, "--warmup-epochs", 0, "--batch-size", 2, "--eval-batch-size", 4]
    fifo = next(path for path in hostile if path.name == "fifo.jpg")
    with memory_limit(), fifo_watchdog(fifo, 30) as hung:
        stopped = cli_here(*arguments, "--output", tmp_path / "stopped")
        skipped = cli_here(*arguments, "--skip-corrupt", "--output", tmp_path / "skipped")
    assert not hung, f"reading {hung} blocked"
    assert stopped.returncode == 2 and len(stopped.stderr.strip().splitlines()) == 1, stopped.stderr
    first = sorted(hostile)[0]
    assert f"Corrupt image {first} (cannot be decoded" in stopped.stderr
    assert "(4 more besides)" in stopped.stderr and "--skip-corrupt" in stopped.stderr
    assert not (tmp_path / "stopped").exists()  # before any file or training

    assert skipped.returncode == 0, skipped.stderr[-3000:]
    for path, reason in hostile.items():
        assert f"skipping corrupt image {path} ({reason}" in skipped.stdout, (path, skipped.stdout)
    results = json.loads((tmp_path / "skipped" / "results.json").read_text())
    labels, _, _ = load_predictions(tmp_path / "skipped" / results["runs"][0]["predictions"]["my_images"])
    assert len(labels) == 4  # the good test images, every one evaluated


@pytest.mark.parametrize("name, write", [
    ("bomb.png", png_bomb),
    ("animated.webp", animated_webp),  # decoded, it would corrupt the process's memory
])
def test_the_pipeline_refuses_a_decompression_bomb_before_decoding_it(tmp_path, capfd, name, write):
    """What a library user meets who builds a pipeline without the run's check."""
    for i in range(2):
        write_image(tmp_path / "c" / "x" / f"{i}.png", seed=i)
    write(tmp_path / "c" / "x" / name)
    ds = load_dataset(tmp_path / "c")
    items = ds.train + ds.val + ds.test
    with memory_limit():
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"Cannot decode.*{name}.*too many pixels"):
            list(ds.to_tf_dataset("test", 4, training=False, image_size=8, items=items))
        kept = list(ds.to_tf_dataset("test", 4, training=False, image_size=8, items=items, skip_corrupt=True))
    assert sum(len(labels) for _, labels in kept) == 2
    assert "skipping the image file " + str(tmp_path / "c" / "x" / name) in capfd.readouterr().err


def test_the_pipeline_guard_reads_each_formats_declared_size(tmp_path):
    """The size the graph's guard reads before decoding is the one each header declares."""
    from PIL import Image

    from cocoop_tf.data.transforms import _read_header

    rgba = np.random.default_rng(0).integers(0, 256, (23, 37, 4), np.uint8)
    encodings = {"PNG": {}, "GIF": {}, "BMP": {}, "WEBP": {}, "lossless WEBP": {"lossless": True}}
    for name, options in encodings.items():
        for mode in ("RGB", "RGBA"):
            if name in ("GIF", "BMP") and mode == "RGBA":
                continue
            path = tmp_path / f"{name}-{mode}".replace(" ", "_")
            Image.fromarray(rgba, "RGBA").convert(mode).save(path, name.split()[-1], **options)
            header = _read_header(tf.constant(path.read_bytes()))
            assert (float(header["pixels"]), bool(header["decodable"])) == (23 * 37, True), path.name
    for path in (animated_webp(tmp_path / "animated.webp"), jpeg_xl(tmp_path / "x.jpg")):
        assert not bool(_read_header(tf.constant(path.read_bytes()))["decodable"]), path.name
    assert float(_read_header(tf.constant(webp_bomb(tmp_path / "b.webp", extended=True).read_bytes()))["pixels"]) == 16000**2


def test_image_check_names_webp_bombs_animations_and_foreign_formats(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "photo.jpg", "TIFF")  # misnamed
    hostile = {
        webp_bomb(tmp_path / "bomb.webp"): "declares 16000 x 16000 pixels, more than the 89,478,485",
        webp_bomb(tmp_path / "canvas.webp", extended=True): "declares 16000 x 16000 pixels",
        animated_webp(tmp_path / "animated.webp"): "an animated WebP, which TensorFlow's decoder cannot read: "
                                                  "save its first frame as PNG",
        jpeg_xl(tmp_path / "jpeg_xl.jpg"): "a JPEG XL file, which TensorFlow's decoder cannot read",
        tmp_path / "photo.jpg": "a TIFF file, which TensorFlow's decoder cannot read (it reads JPEG, PNG, GIF, "
                                "BMP or WebP): convert it to PNG, e.g. with Pillow",
    }
    with memory_limit():
        found = dict(find_corrupt_images([str(p) for p in hostile]))
        for path, reason in hostile.items():
            assert reason in found[str(path)], (path, found[str(path)])
            with pytest.raises(ValueError, match=re.escape(reason)):
                load_image(path)


def _pets(tmp_path):
    """A CoOp Oxford Pets folder; returns it and its split file's content."""
    pets = tmp_path / "data" / "oxford_pets"
    split = write_split_layout(
        pets, "images", "split_zhou_OxfordPets.json",
        [("abyssinian", (2, 1, 2)), ("beagle", (2, 1, 2))],
        lambda name, part, i: f"{name}_{part}_{i}.jpg",
    )
    (pets / "annotations").mkdir()
    return pets, split


@pytest.mark.parametrize("outside", ["../../secret.jpg", "ABSOLUTE", "images/../../secret.jpg"])
def test_split_file_entries_cannot_leave_the_image_folder(tmp_path, cli_here, outside):
    pets, split = _pets(tmp_path)
    secret = write_image(tmp_path / "data" / "secret.jpg")  # there to be read, were the path followed
    outside = secret if outside == "ABSOLUTE" else outside
    split["test"][0][0] = outside
    (pets / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    result = cli_here("base2new", "--dataset", "oxford_pets", "--data-root", tmp_path / "data",
                      "--backbone", "random_tiny", "--output", tmp_path / "out")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "split_zhou_OxfordPets.json" in result.stderr
    assert f"entry {[outside, 0, 'abyssinian']!r} names a file outside the image folder" in result.stderr
    assert not (tmp_path / "out").exists()


def test_split_file_paths_inside_the_dataset_and_its_links_hold(tmp_path):
    pets, split = _pets(tmp_path)
    elsewhere = write_image(tmp_path / "elsewhere" / "linked.jpg")
    (pets / "images" / "linked.jpg").symlink_to(elsewhere)  # the user's own link: followed
    split["test"][0][0] = "linked.jpg"
    split["test"][1][0] = "sub/../" + split["test"][1][0]  # normalised, still inside
    (pets / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    test = load_dataset("oxford_pets", tmp_path / "data").test
    assert test[0].path == str(pets / "images" / "linked.jpg")
    assert test[1].path == str(pets / "images" / split["test"][1][0][len("sub/../"):])
    for entry, problem in (([True, 0, "abyssinian"], "does not start with a relative path"),
                           (["a.jpg", "0", "abyssinian"], "integer label")):
        split["test"][0] = entry
        (pets / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
        with pytest.raises(ValueError, match=problem):
            load_dataset("oxford_pets", tmp_path / "data")


def test_symlink_loops_are_named_as_such(tmp_path, cli_here):
    pets, split = _pets(tmp_path)
    (pets / "images" / "loop.jpg").symlink_to("loop.jpg")
    split["test"][0][0] = "loop.jpg"
    (pets / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    listed = cli_here("base2new", "--dataset", "oxford_pets", "--data-root", tmp_path / "data",
                      "--backbone", "random_tiny", "--output", tmp_path / "out")
    assert listed.returncode == 2 and "missing" not in listed.stderr
    assert f"lists {pets / 'images' / 'loop.jpg'}, a symlink loop" in listed.stderr

    (tmp_path / "data" / "dtd").symlink_to("dtd")
    dataset = cli_here("base2new", "--dataset", "dtd", "--data-root", tmp_path / "data",
                       "--backbone", "random_tiny", "--output", tmp_path / "out")
    assert dataset.returncode == 2 and "not found" not in dataset.stderr
    assert f"{tmp_path / 'data' / 'dtd'} is a symlink loop" in dataset.stderr

    (tmp_path / "folder").symlink_to("folder")
    folder = cli_here("train", "--dataset", tmp_path / "folder", "--backbone", "random_tiny",
                      "--output", tmp_path / "out")
    assert folder.returncode == 2 and f"{tmp_path / 'folder'} is a symlink loop" in folder.stderr

    classes = tmp_path / "classes"
    write_image(classes / "cat" / "1.jpg")
    (classes / "dog").symlink_to("dog")  # a class that would silently be missing
    with pytest.raises(ValueError, match="dog is a symlink loop"):
        load_dataset(classes)
    assert not (tmp_path / "out").exists()
