"""Image decoding and CLIP's training and evaluation transforms, in TensorFlow ops."""

import math
import os

import numpy as np
import tensorflow as tf

from cocoop_tf.data.image_files import DECODED_FORMATS
from cocoop_tf.data.image_files import DECODED_NAMES
from cocoop_tf.data.image_files import MAX_IMAGE_PIXELS
from cocoop_tf.data.image_files import check_declared_size
from cocoop_tf.data.image_files import read_image_file


def load_image(path):
    """Reads an image file (JPEG, PNG, GIF, BMP, WebP) as RGB uint8, [H, W, 3].

    The formats are those the dataset pipelines decode
    (`image_files.DECODED_FORMATS`), recognised by their bytes, whatever the
    file's name; another (TIFF, HEIC, ...) is refused with a way to convert
    it. Grey images are repeated to three channels and alpha is dropped. Only a
    regular file of bounded size whose header declares a bounded number of
    pixels is read and decoded (see `image_files`).

    Args:
        path: path of the image file.

    Returns:
        A uint8 tensor of shape [H, W, 3].

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image.
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"Image file not found: {path!r}.")
    data = read_image_file(path)
    kind = check_declared_size(path, data)
    try:
        return decode_checked_image(tf.constant(data), kind)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        # Keep TensorFlow's reason, without its op and device decorations.
        reason = error.message.split("}}")[-1].split("[Op:")[0].strip()
        raise ValueError(
            f"Cannot decode {path!r} as an image (corrupt, or not {DECODED_NAMES}): {reason}"
        ) from None


def resize_and_center_crop(image, size):
    """CLIP's test transform: bicubic resize of the short side, centre crop.

    Args:
        image: [H, W, 3] tensor of pixel values 0..255 (any dtype).
        size: output side length.

    Returns:
        A float32 tensor [size, size, 3] of pixel values 0..255.
    """
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short = tf.minimum(height, width)
    # As torchvision's Resize(size): the short side becomes `size`, the long
    # side size * long / short rounded down.
    new_height = tf.where(height == short, size, size * height // short)
    new_width = tf.where(width == short, size, size * width // short)
    image = tf.image.resize(image, (new_height, new_width), method="bicubic", antialias=True)
    # As torchvision's CenterCrop: offsets rounded half to even.
    top = tf.cast(tf.round((new_height - size) / 2), tf.int32)
    left = tf.cast(tf.round((new_width - size) / 2), tf.int32)
    image = image[top : top + size, left : left + size]
    # Bicubic interpolation overshoots; keep the documented 0..255 range.
    return tf.clip_by_value(image, 0.0, 255.0)


def decode_image(data):
    """Decodes encoded image bytes (JPEG, PNG, GIF, BMP, WebP) as RGB uint8, [H, W, 3].

    The graph-mode counterpart of `load_image`: grey images are repeated to
    three channels, alpha is dropped, CMYK JPEGs are converted to RGB (as
    Adobe-inverted CMYK, which is how Photoshop writes them) and an animated
    GIF gives its first frame. A corrupt input makes the op fail; the input
    pipeline turns that into an error or a warning naming the file.

    Only the formats of `image_files.DECODED_FORMATS` get to the decoder
    (TensorFlow's would also read JPEG XL, whose size nothing here bounds),
    and no animated WebP (which TensorFlow decodes into memory it did not
    allocate for it). A PNG, GIF, BMP or WebP whose header declares more than
    `MAX_IMAGE_PIXELS` pixels fails before it is decoded (a decompression
    bomb would otherwise take all memory); `image_files.check_declared_size`,
    which the run's image check applies, also bounds JPEGs and counts every
    GIF frame.

    Args:
        data: scalar string tensor, the file's bytes.

    Returns:
        A uint8 tensor [H, W, 3].
    """
    header = _read_header(data)
    # Refused: decode nothing instead, which fails as a corrupt file does.
    data = tf.where(header["decodable"] & (header["pixels"] <= MAX_IMAGE_PIXELS), data, b"")
    if "webp" not in DECODED_FORMATS:
        return _decode(data, False)
    return _decode(data, header["webp"])


def decode_checked_image(data, kind):
    """`decode_image`'s decoder, without its guard, for bytes already checked.

    For files read through `image_files.read_image_file` and passed by
    `image_files.check_declared_size` (a stricter bound, which also gives the
    format); eagerly, the guard's small ops would cost more than decoding a
    small image.

    Args:
        data: scalar string tensor, the file's bytes.
        kind: their format, from `check_declared_size` ("jpeg", "webp", ...).

    Returns:
        A uint8 tensor [H, W, 3].
    """
    return _decode(data, kind == "webp")


def _decode(data, webp):
    """Decodes as RGB; `webp` (a bool or a bool tensor) picks the WebP decoder."""
    if webp is False:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    elif webp is True:
        image = _decode_webp(data)
    else:
        image = tf.cond(
            webp, lambda: _decode_webp(data), lambda: tf.io.decode_image(data, channels=3, expand_animations=False)
        )
    image.set_shape([None, None, 3])
    return image


def _decode_webp(data):
    # As the file holds, RGB or RGBA (asking for RGB fails on RGBA), then RGB. Never an
    # animation (refused before): channels=0 decodes one into memory allocated for fewer channels.
    return tf.io.decode_webp(data, channels=0)[0, :, :, :3]


def _header_fields():
    """Weights that read, from a file's first 32 bytes, the fields the guard looks at."""
    fields = {  # name: (offset, size, little endian)
        "word0": (0, 4, False), "word4": (4, 4, False), "word8": (8, 4, False), "word12": (12, 4, False),
        "byte20": (20, 1, False), "vp8_start": (23, 3, False),
        "png_w": (16, 4, False), "png_h": (20, 4, False),
        "gif_w": (6, 2, True), "gif_h": (8, 2, True),
        "bmp_w": (18, 4, True), "bmp_h": (22, 4, True),  # signed
        "vp8x_w": (24, 3, True), "vp8x_h": (27, 3, True),  # WebP extended: canvas width - 1, height - 1
        "vp8l_bits": (21, 4, True),  # WebP lossless: 14 bits width - 1, 14 bits height - 1, ...
        "vp8_w": (26, 2, True), "vp8_h": (28, 2, True),  # WebP lossy: 14 bits width, height; 2 scale bits
    }
    weights = np.zeros([32, len(fields)])
    for column, (offset, size, little_endian) in enumerate(fields.values()):
        places = 256.0 ** np.arange(size)
        weights[offset : offset + size, column] = places if little_endian else places[::-1]
    return list(fields), weights


_FIELD_NAMES, _FIELD_WEIGHTS = _header_fields()


def _word(text):
    return float(int.from_bytes(text, "big"))


def _read_header(data):
    """What the guard needs from a file's first bytes, in one product with fixed weights.

    No control flow, few ops: the guard runs for every image of every epoch.
    (JPEG sizes need a walk through the header's segments, which `image_files`
    does before a run; a JPEG's count here is 0.)

    Returns:
        dict: "pixels" (float64, width x height as a PNG, GIF, BMP or WebP
        header declares them), "decodable" (bool: a format of
        `DECODED_FORMATS`, and no animated or unsized WebP) and "webp" (bool).
    """
    # The first 32 bytes, zero-padded: a short file fails in the decoder.
    head = tf.io.decode_raw(tf.strings.substr(tf.strings.join([data, b"\0" * 32]), 0, 32), tf.uint8)
    # float64: 2**32 x 2**32 does not overflow.
    f = dict(zip(_FIELD_NAMES, tf.unstack(tf.linalg.matvec(_FIELD_WEIGHTS.T, tf.cast(head, tf.float64)))))
    half0 = tf.math.floordiv(f["word0"], 65536.0)
    png = tf.equal(f["word0"], _word(b"\x89PNG")) & tf.equal(f["word4"], _word(b"\r\n\x1a\n"))
    gif = tf.equal(f["word0"], _word(b"GIF8"))
    bmp = tf.equal(half0, _word(b"BM"))
    jpeg = tf.equal(half0, _word(b"\xff\xd8"))
    riff = tf.equal(f["word0"], _word(b"RIFF")) & tf.equal(f["word8"], _word(b"WEBP"))
    vp8x = riff & tf.equal(f["word12"], _word(b"VP8X"))
    vp8l = riff & tf.equal(f["word12"], _word(b"VP8L")) & tf.equal(f["byte20"], 0x2F)
    vp8 = riff & tf.equal(f["word12"], _word(b"VP8 ")) & tf.equal(f["vp8_start"], _word(b"\x9d\x01\x2a"))
    animated = vp8x & tf.equal(tf.math.floormod(tf.math.floordiv(f["byte20"], 2.0), 2.0), 1.0)
    # BMP sizes are signed (a negative height stores rows top down).
    bmp_w, bmp_h = (tf.abs(tf.where(f[k] >= 2.0**31, f[k] - 2.0**32, f[k])) for k in ("bmp_w", "bmp_h"))
    vp8l_w = tf.math.floormod(f["vp8l_bits"], 16384.0) + 1
    vp8l_h = tf.math.floormod(tf.math.floordiv(f["vp8l_bits"], 16384.0), 16384.0) + 1
    webp_pixels = tf.where(vp8x, (f["vp8x_w"] + 1) * (f["vp8x_h"] + 1), tf.where(
        vp8l, vp8l_w * vp8l_h, tf.math.floormod(f["vp8_w"], 16384.0) * tf.math.floormod(f["vp8_h"], 16384.0)))
    pixels = tf.where(png, f["png_w"] * f["png_h"], tf.where(
        gif, f["gif_w"] * f["gif_h"], tf.where(bmp, bmp_w * bmp_h, tf.where(riff, webp_pixels, 0.0))))
    decodable = jpeg | png | gif | bmp
    if "webp" in DECODED_FORMATS:
        decodable |= (vp8x | vp8l | vp8) & ~animated
    return {"pixels": pixels, "decodable": decodable, "webp": riff}


def random_crop_window(height, width, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Draws a crop window the way torchvision's `RandomResizedCrop` does.

    Up to ten attempts draw an area fraction uniformly from `scale` and an
    aspect ratio log-uniformly from `ratio`; the first window that fits the
    image is placed uniformly at random. When none fits, the window is the
    centred crop with the aspect ratio clamped to `ratio`.

    Args:
        height: image height (int32 scalar).
        width: image width (int32 scalar).
        seed: int32/int64 tensor of shape [2], for the stateless random ops.
        scale: range of the crop's area as a fraction of the image's area.
        ratio: range of the crop's aspect ratio (width / height).

    Returns:
        `(top, left, crop_height, crop_width)` as int32 scalars.
    """
    area_seed, ratio_seed, offset_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3)
    )
    height_f = tf.cast(height, tf.float32)
    width_f = tf.cast(width, tf.float32)
    attempts = 10
    target_area = height_f * width_f * tf.random.stateless_uniform(
        [attempts], area_seed, scale[0], scale[1]
    )
    aspect = tf.exp(
        tf.random.stateless_uniform(
            [attempts], ratio_seed, math.log(ratio[0]), math.log(ratio[1])
        )
    )
    # tf.round rounds half to even, like Python's round() in torchvision.
    crop_widths = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    crop_heights = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    fits = (crop_widths > 0) & (crop_widths <= width) & (crop_heights > 0) & (
        crop_heights <= height
    )
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    found = tf.reduce_any(fits)

    in_ratio = width_f / height_f
    too_tall = in_ratio < ratio[0]
    too_wide = in_ratio > ratio[1]
    fallback_width = tf.where(
        too_wide, tf.cast(tf.round(height_f * ratio[1]), tf.int32), width
    )
    fallback_height = tf.where(
        too_tall, tf.cast(tf.round(width_f / ratio[0]), tf.int32), height
    )

    crop_height = tf.where(found, crop_heights[first], fallback_height)
    crop_width = tf.where(found, crop_widths[first], fallback_width)
    # Uniform integers in [0, height - crop_height] and [0, width - crop_width].
    u = tf.random.stateless_uniform([2], offset_seed)
    random_top = tf.cast(u[0] * tf.cast(height - crop_height + 1, tf.float32), tf.int32)
    random_left = tf.cast(u[1] * tf.cast(width - crop_width + 1, tf.float32), tf.int32)
    top = tf.where(found, tf.minimum(random_top, height - crop_height), (height - crop_height) // 2)
    left = tf.where(found, tf.minimum(random_left, width - crop_width), (width - crop_width) // 2)
    return top, left, crop_height, crop_width


def check_crop_scale(crop_scale):
    """Validates a random resized crop's area range.

    Args:
        crop_scale: `(low, high)`, the crop's area as a fraction of the image's.

    Returns:
        `(low, high)` as floats.

    Raises:
        ValueError: unless `0 < low <= high <= 1`.
    """
    if (
        not isinstance(crop_scale, (list, tuple)) or len(crop_scale) != 2
        or not 0 < crop_scale[0] <= crop_scale[1] <= 1
    ):
        raise ValueError(
            f"crop_scale must be [low, high] with 0 < low <= high <= 1 (the paper's: 0.08, 1.0), "
            f"got {crop_scale!r}."
        )
    return float(crop_scale[0]), float(crop_scale[1])


def random_resized_crop(image, size, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """CLIP's training crop: a random window (as torchvision), bicubic resize.

    Args:
        image: [H, W, 3] tensor of pixel values 0..255 (any dtype).
        size: output side length.
        seed: tensor of shape [2] for the stateless random ops; the same
            seed gives the same crop.
        scale: range of the crop's area as a fraction of the image's area.
        ratio: range of the crop's aspect ratio (width / height).

    Returns:
        A float32 tensor [size, size, 3] of pixel values 0..255.
    """
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    top, left, crop_height, crop_width = random_crop_window(
        shape[0], shape[1], seed, scale, ratio
    )
    crop = image[top : top + crop_height, left : left + crop_width]
    # Antialiased like PIL's bicubic resize, which torchvision uses for images.
    crop = tf.image.resize(crop, (size, size), method="bicubic", antialias=True)
    crop.set_shape([size, size, 3])
    return tf.clip_by_value(crop, 0.0, 255.0)


def random_horizontal_flip(image, seed):
    """Mirrors the image left to right with probability 1/2.

    Args:
        image: [H, W, C] tensor.
        seed: tensor of shape [2] for the stateless random op.

    Returns:
        The image, flipped or not.
    """
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.where(flip, tf.reverse(image, axis=[1]), image)
