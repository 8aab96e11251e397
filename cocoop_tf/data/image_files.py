"""Reading image files without trusting them.

An image path may name a FIFO (a read that never ends), a device such as
/dev/zero (one that never stops), a symlink loop, or a small file whose
header declares more pixels than memory holds (a decompression bomb). Only
regular files of bounded size are read, and the pixels a header declares are
counted before anything is decoded.
"""

import errno
import os
import stat
import struct

from cocoop_tf.files import file_kind

# An uncompressed BMP at the pixel bound below is ~256 MiB; no photo is larger.
MAX_IMAGE_BYTES = 1 << 29
# PIL's decompression-bomb bound: 256 MiB of 24-bit pixels (~9459 x 9459).
MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3

_SIGNATURES = {
    b"\xff\xd8": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"BM": "bmp",
}


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


def image_format(data):
    """"jpeg", "png", "gif" or "bmp" from a file's first bytes, or None."""
    return next((kind for signature, kind in _SIGNATURES.items() if data.startswith(signature)), None)


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


def declared_size(data):
    """The size an image file's header declares, read without decoding.

    Args:
        data: the file's bytes.

    Returns:
        `(format, width, height, pixels)`, pixels being what decoding
        allocates (for a GIF, its canvas and every frame); or None when the
        header is not there (truncated, or not JPEG, PNG, GIF or BMP).
    """
    kind = image_format(data)
    if kind is None:
        return None
    size = {"jpeg": _jpeg_size, "png": _png_size, "gif": _gif_size, "bmp": _bmp_size}[kind](data)
    return None if size is None else (kind, *size)


def check_declared_size(path, data, max_pixels=MAX_IMAGE_PIXELS):
    """Raises ImageFileError when the header is missing or declares too many pixels.

    Args:
        path: the file, for the message.
        data: its bytes.
        max_pixels: the most pixels decoding may allocate.

    Returns:
        The format: "jpeg", "png", "gif" or "bmp".
    """
    kind = image_format(data)
    if kind is None:
        raise ImageFileError(path, "not a JPEG, PNG, GIF or BMP file")
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
