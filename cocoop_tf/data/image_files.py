"""Reading image files without trusting them.

An image path may name a FIFO (a read that never ends), a device such as
/dev/zero (one that never stops), a symlink loop, or a small file whose
header declares more pixels than memory holds (a decompression bomb). Only
regular files of bounded size are read, and the pixels a header declares are
counted before anything is decoded.

This module is also the one place that says which images are taken: the
formats TensorFlow's decoder reads (`DECODED_FORMATS`), the file names taken
for them (`IMAGE_EXTENSIONS`, any case) and how to convert the others.
"""

import errno
import os
import stat
import struct

import tensorflow as tf

from cocoop_tf.files import file_kind

# An uncompressed BMP at the pixel bound below is ~256 MiB; no photo is larger.
MAX_IMAGE_BYTES = 1 << 29
# PIL's decompression-bomb bound: 256 MiB of 24-bit pixels (~9459 x 9459).
MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3

# Each format TensorFlow's decoder may read, and the file name extensions of its files.
IMAGE_FORMATS = {
    "jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "png": (".png",),
    "gif": (".gif",),
    "bmp": (".bmp",),
    "webp": (".webp",),
}
FORMAT_NAMES = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WebP"}
# WebP where TensorFlow has tf.io.decode_webp (recent versions); an older one reads the other four.
DECODED_FORMATS = tuple(kind for kind in IMAGE_FORMATS if kind != "webp" or hasattr(tf.io, "decode_webp"))
# The file names a class folder's images are taken by, compared in lower case (.JPG, .Png).
IMAGE_EXTENSIONS = tuple(extension for kind in DECODED_FORMATS for extension in IMAGE_FORMATS[kind])
DECODED_NAMES = ", ".join(FORMAT_NAMES[kind] for kind in DECODED_FORMATS[:-1]) + (
    f" or {FORMAT_NAMES[DECODED_FORMATS[-1]]}"
)
# What to do with images of another format (TIFF, HEIC, AVIF, ...), for messages: Pillow
# comes with cocoop-tf (matplotlib needs it) and reads them.
CONVERT_COMMAND = (
    "`python -c \"import sys; from PIL import Image; [Image.open(f).convert('RGB').save(f.rsplit('.', 1)[0]"
    " + '.png') for f in sys.argv[1:]]\" FILE ...`"
)
CONVERT_HINT = f"convert it to PNG, e.g. with Pillow: {CONVERT_COMMAND}"

_SIGNATURES = {
    b"\xff\xd8": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"BM": "bmp",
}
# Formats TensorFlow cannot decode, recognised to say what a refused file is.
_FOREIGN_SIGNATURES = {
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"\xff\x0a": "JPEG XL",
    b"\x00\x00\x00\x0cJXL ": "JPEG XL",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000",
    b"8BPS": "Photoshop (PSD)",
    b"\x00\x00\x01\x00": "ICO",
}
_WEBP_ANIMATION_FLAG = 0x02


class ImageFileError(ValueError):
    """An image file that cannot be used; `reason` says why in a few words.

    Args:
        path: the file.
        reason: why, e.g. "symlink loop" or "truncated JPEG".
    """

    def __init__(self, path, reason):
        super().__init__(f"Cannot decode {path!r} as an image: {reason}.")
        self.path = path
        self.reason = reason


def _os_reason(path, error):
    if error.errno == errno.ELOOP:
        return "symlink loop: a link that leads back to itself"
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return "broken symlink" if os.path.islink(path) else "not found"
    return f"cannot be read: {error.strerror or error}"


def _check_regular(path, info, max_bytes):
    if not stat.S_ISREG(info.st_mode):
        raise ImageFileError(path, f"not a regular file but {file_kind(info.st_mode)}")
    if info.st_size > max_bytes:
        raise ImageFileError(
            path, f"{info.st_size:,} bytes, more than the {max_bytes:,} an image file may have"
        )


def read_image_file(path, max_bytes=MAX_IMAGE_BYTES):
    """The bytes of an image file, read only if it is a regular file of bounded size.

    A symlink to a regular file is followed.

    Args:
        path: the file.
        max_bytes: the largest size read.

    Returns:
        The file's bytes.

    Raises:
        ImageFileError: a ValueError whose `reason` names the problem (not
            found, symlink loop, a FIFO or device, too large, empty).
    """
    path = os.fspath(path)
    try:
        # Looked at before opening, so that no device is opened at all; the
        # open descriptor is looked at again in case the path changed since.
        _check_regular(path, os.stat(path), max_bytes)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise ImageFileError(path, _os_reason(path, error)) from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        _check_regular(path, info, max_bytes)
        try:
            # A read allocates what it asks for: ask for the size the file has, and one byte more.
            data = f.read(info.st_size + 1)
        except OSError as error:
            raise ImageFileError(path, _os_reason(path, error)) from None
    if len(data) > info.st_size:
        raise ImageFileError(path, "it grew while being read: let whatever writes it finish")
    if not data:
        raise ImageFileError(path, "empty file")
    return data


def _is_webp(data):
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def image_format(data):
    """The format of `DECODED_FORMATS` a file's first bytes show ("jpeg", "webp", ...), or None."""
    if _is_webp(data):
        return "webp" if "webp" in DECODED_FORMATS else None
    return next((kind for signature, kind in _SIGNATURES.items() if data.startswith(signature)), None)


def foreign_format(data):
    """The name of an image format TensorFlow cannot decode ("TIFF", "HEIF", ...), or None."""
    if _is_webp(data):
        return "WebP"  # from a TensorFlow without tf.io.decode_webp
    if data[4:8] == b"ftyp":  # ISO media: HEIC, AVIF
        return "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIF"
    return next((name for signature, name in _FOREIGN_SIGNATURES.items() if data.startswith(signature)), None)


def webp_animated(data):
    """Whether a WebP file is an animation (its extended header's animation flag)."""
    return _is_webp(data) and data[12:16] == b"VP8X" and len(data) > 20 and bool(data[20] & _WEBP_ANIMATION_FLAG)


def _jpeg_size(data):
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header (SOFn)
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height, width * height
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return None


def _png_size(data):
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height, width * height


def _gif_size(data):
    """The canvas, and the pixels decoded: the GIF decoder holds every frame, not only the first."""
    if len(data) < 13:
        return None
    width, height = struct.unpack("<HH", data[6:10])
    pixels = width * height
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)

    def skip_blocks(pos):
        while pos < len(data) and data[pos]:
            pos += data[pos] + 1
        return pos + 1

    while pos < len(data):
        block = data[pos]
        if block == 0x21:  # extension: label, then data blocks
            pos = skip_blocks(pos + 2)
        elif block == 0x2C:  # image: descriptor, colour table, code size, data blocks
            if pos + 10 > len(data):
                break
            frame_width, frame_height = struct.unpack("<HH", data[pos + 5 : pos + 9])
            pixels += frame_width * frame_height
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
            pos = skip_blocks(pos + 1)
        else:  # the trailer, or damage the decoder will report
            break
    return width, height, pixels


def _bmp_size(data):
    if len(data) < 26:
        return None
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 header: 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    width, height = abs(width), abs(height)  # a negative height means rows top down
    return width, height, width * height


def _webp_size(data):
    """The canvas: of the extended header (VP8X), else of the one lossy or lossless bitstream."""
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
    elif chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
    else:
        return None
    return width, height, width * height


def declared_size(data):
    """The size an image file's header declares, read without decoding.

    Args:
        data: the file's bytes.

    Returns:
        `(format, width, height, pixels)`, pixels being what decoding
        allocates (for a GIF, its canvas and every frame); or None when the
        header is not there (truncated, or not a format of `DECODED_FORMATS`).
    """
    kind = image_format(data)
    if kind is None:
        return None
    readers = {"jpeg": _jpeg_size, "png": _png_size, "gif": _gif_size, "bmp": _bmp_size, "webp": _webp_size}
    size = readers[kind](data)
    return None if size is None else (kind, *size)


def check_declared_size(path, data, max_pixels=MAX_IMAGE_PIXELS):
    """Raises ImageFileError when the header is missing or declares too many pixels.

    Args:
        path: the file, for the message.
        data: its bytes.
        max_pixels: the most pixels decoding may allocate.

    Returns:
        The format, one of `DECODED_FORMATS` ("jpeg", "png", ...).
    """
    kind = image_format(data)
    if kind is None:
        foreign = foreign_format(data)
        if foreign is None:
            raise ImageFileError(path, f"not a {DECODED_NAMES} file")
        raise ImageFileError(
            path, f"a {foreign} file, which TensorFlow's decoder cannot read (it reads {DECODED_NAMES}): "
            + CONVERT_HINT
        )
    if webp_animated(data):
        raise ImageFileError(
            path, "an animated WebP, which TensorFlow's decoder cannot read: save its first frame as PNG"
        )
    size = declared_size(data)
    if size is None:
        raise ImageFileError(path, f"truncated {kind.upper()}")
    _, width, height, pixels = size
    if pixels > max_pixels:
        frames = f" ({pixels:,} in all its frames)" if pixels > width * height else ""
        raise ImageFileError(
            path, f"declares {width} x {height} pixels{frames}, more than the {max_pixels:,} "
            "an image may have: shrink it, or leave it out"
        )
    return kind
