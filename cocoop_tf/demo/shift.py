"""The mini benchmark's distribution shift: faded grey prints on noisy grey paper.

Pretraining draws saturated ink on black, with at most one of four effects
per picture (`rendering.EFFECTS`). The benchmark draws its held-out images
as a faded print instead, all four at once: colourless grey ink at 40-60%
brightness, on a dark grey background (5-15%) with pixel noise, slightly
blurred. The shapes stay clearly visible, but no pretraining picture looks
like this: zero-shot accuracy with "a photo of a {}." drops, while the class
information is still in the image features, for a learned prompt to
recover.

Each image's random draws come from a generator seeded by the SHA-256 of its
own pixels, so an image always looks the same, whatever else is drawn with
it and in whatever order.
"""

import hashlib

import numpy as np
from scipy import ndimage

from cocoop_tf.demo.rendering import BLUR_SIGMA
from cocoop_tf.demo.rendering import FADED_INK_BRIGHTNESS as INK_BRIGHTNESS
from cocoop_tf.demo.rendering import GREY_BACKGROUND_BRIGHTNESS as BACKGROUND_BRIGHTNESS
from cocoop_tf.demo.rendering import NOISE_STD
from cocoop_tf.demo.rendering import grey_canvas
from cocoop_tf.demo.rendering import plain_styles

SHIFT_DESCRIPTION = (
    f"grey ink at {INK_BRIGHTNESS[0]:.0%}-{INK_BRIGHTNESS[1]:.0%} brightness on a "
    f"{BACKGROUND_BRIGHTNESS[0]:.0%}-{BACKGROUND_BRIGHTNESS[1]:.0%} grey background, "
    f"Gaussian blur sigma {BLUR_SIGMA}, pixel noise std {NOISE_STD}"
)
_SEED_SALT = b"cocoop_tf.demo.shift.v1"


def image_generator(image):
    """The random generator of one source image, seeded by its pixels."""
    digest = hashlib.sha256(_SEED_SALT + np.ascontiguousarray(image, np.uint8).tobytes()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def render_shifted(images):
    """Draws grey 28 x 28 images as faded prints on noisy grey paper.

    Args:
        images: uint8 `[N, 28, 28]`, white shapes on black.

    Returns:
        uint8 `[N, 32, 32, 3]` RGB (grey: the three channels are equal).
    """
    images = np.asarray(images, np.uint8)
    shapes = grey_canvas(images, plain_styles(len(images)).offsets)
    shapes = ndimage.gaussian_filter(shapes, (0, BLUR_SIGMA, BLUR_SIGMA))
    pictures = np.empty_like(shapes)
    for i, image in enumerate(images):
        rng = image_generator(image)
        ink = rng.uniform(*INK_BRIGHTNESS)
        background = rng.uniform(*BACKGROUND_BRIGHTNESS)
        noise = rng.normal(0.0, NOISE_STD, shapes.shape[1:])
        pictures[i] = background + (ink - background) * shapes[i] + noise
    pictures = np.round(255 * np.clip(pictures, 0.0, 1.0)).astype(np.uint8)
    return np.repeat(pictures[..., None], 3, axis=-1)
