"""How the demo's 28 x 28 grey images become 32 x 32 RGB pictures.

Pretraining draws every shape in a random ink colour, on black, shifted by
up to two pixels, and half of the pictures with one photographic effect:
faded ink, a grey background, pixel noise, or blur (`EFFECTS`). Captions
name the effect, and the colour half of the time (see `captions.py`), so
the small CLIP learns what such words look like: its text encoder reads the
words around the class name, and a learned prompt has something to steer
(with captions that only ever vary in wording, the text encoder learns to
ignore every word but the class name, and no prompt can change its output).
The mini benchmark's shift (see `shift.py`) applies all four effects at
once, to grey ink: a combination pretraining never draws.
"""

import dataclasses

import numpy as np
from scipy import ndimage

IMAGE_SIZE = 32
SOURCE_SIZE = 28
_MARGIN = IMAGE_SIZE - SOURCE_SIZE

# Ink colours: the word captions use for each, and its RGB value.
INK_COLOURS = {
    "white": (255, 255, 255),
    "red": (235, 45, 45),
    "green": (50, 205, 70),
    "blue": (70, 100, 255),
    "yellow": (245, 225, 50),
}
COLOUR_WORDS = tuple(INK_COLOURS)

# The photographic effects, each drawn alone in pretraining, all at once by
# the benchmark: ink at 40-60% of its brightness, a 5-15% grey background,
# grey pixel noise, a Gaussian blur of the shape.
EFFECTS = ("faded", "grey background", "noisy", "blurry")
FADED, GREY_BACKGROUND, NOISY, BLURRY = range(len(EFFECTS))
NO_EFFECT = -1
FADED_INK_BRIGHTNESS = (0.40, 0.60)
GREY_BACKGROUND_BRIGHTNESS = (0.05, 0.15)
NOISE_STD = 0.04
BLUR_SIGMA = 0.5


@dataclasses.dataclass(frozen=True)
class Styles:
    """How each of N images is drawn.

    Args:
        colour: int `[N]` index into `INK_COLOURS`.
        offsets: int `[N, 2]` top-left corner (row, column) of the 28 x 28
            shape on the 32 x 32 canvas, each in 0..4.
    """

    colour: np.ndarray
    offsets: np.ndarray


def plain_styles(count):
    """White shapes, centred: the images as the packages give them."""
    return Styles(np.zeros(count, np.int64), np.full((count, 2), _MARGIN // 2))


def random_styles(count, rng):
    """A uniformly drawn ink colour and position for each image.

    Args:
        count: number of images.
        rng: a `numpy.random.Generator`.
    """
    colour = rng.integers(0, len(INK_COLOURS), count)
    offsets = rng.integers(0, _MARGIN + 1, size=(count, 2))
    return Styles(colour, offsets)


def grey_canvas(images, offsets):
    """Places grey shapes on a black 32 x 32 canvas.

    Args:
        images: uint8 `[N, 28, 28]`.
        offsets: int `[N, 2]` top-left corner of each shape, in 0..4.

    Returns:
        float32 `[N, 32, 32]` in 0..1.
    """
    images = np.asarray(images, np.float32) / 255.0
    offsets = np.asarray(offsets)
    count = len(images)
    if offsets.shape != (count, 2) or offsets.min(initial=0) < 0 or offsets.max(initial=0) > _MARGIN:
        raise ValueError(f"offsets must be [N, 2] integers in 0..{_MARGIN}.")
    canvas = np.zeros((count, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    rows = offsets[:, 0, None] + np.arange(SOURCE_SIZE)[None, :]
    columns = offsets[:, 1, None] + np.arange(SOURCE_SIZE)[None, :]
    canvas[np.arange(count)[:, None, None], rows[:, :, None], columns[:, None, :]] = images
    return canvas


def render(images, styles, effects=None, rng=None):
    """Draws grey images in the given styles: coloured ink on black, with effects.

    Args:
        images: uint8 `[N, 28, 28]`, white shapes on black.
        styles: their `Styles`.
        effects: optional int `[N]`, an index into `EFFECTS` per image, or
            `NO_EFFECT`.
        rng: a `numpy.random.Generator` for the effects' amounts (needed
            with `effects`).

    Returns:
        uint8 `[N, 32, 32, 3]` RGB.
    """
    canvas = grey_canvas(images, styles.offsets)
    ink = np.array(list(INK_COLOURS.values()), np.float32)[styles.colour] / 255.0
    count = len(canvas)
    if effects is None:
        effects = np.full(count, NO_EFFECT)
    effects = np.asarray(effects)
    blurred = effects == BLURRY
    if blurred.any():
        canvas[blurred] = ndimage.gaussian_filter(canvas[blurred], (0, BLUR_SIGMA, BLUR_SIGMA))
    fade = np.ones(count, np.float32)
    background = np.zeros(count, np.float32)
    noise = np.zeros(canvas.shape, np.float32)
    if (effects != NO_EFFECT).any():
        fade = np.where(effects == FADED, rng.uniform(*FADED_INK_BRIGHTNESS, count), 1.0)
        background = np.where(effects == GREY_BACKGROUND, rng.uniform(*GREY_BACKGROUND_BRIGHTNESS, count), 0.0)
        noisy = (effects == NOISY)[:, None, None]
        noise = np.where(noisy, rng.normal(0.0, NOISE_STD, canvas.shape), 0.0)
    ink = ink * fade[:, None]
    background = background[:, None, None, None]
    pictures = background + (ink[:, None, None, :] - background) * canvas[..., None] + noise[..., None]
    return np.round(255 * np.clip(pictures, 0.0, 1.0)).astype(np.uint8)


def render_plain(images):
    """Images as the packages give them: white on black, centred, 32 x 32 RGB."""
    return render(images, plain_styles(len(images)))


def random_crops(pictures, rng, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), flip=True):
    """Random resized crops (and mirror images) of pictures, as training augmentation.

    Like the prompt-learning pipeline's augmentation (torchvision's
    `RandomResizedCrop` and horizontal flip), milder: each window covers a
    `scale` fraction of the picture with an aspect ratio in `ratio`, and is
    resized back to the full size with bilinear interpolation.

    Args:
        pictures: uint8 `[N, S, S, 3]`.
        rng: a `numpy.random.Generator`.
        scale: range of the window's area, as a fraction of the picture's.
        ratio: range of the window's width / height.
        flip: also mirror each picture left to right with probability 1/2.

    Returns:
        uint8 `[N, S, S, 3]`.
    """
    count, size = len(pictures), pictures.shape[1]
    area = rng.uniform(*scale, count) * size * size
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), count))
    heights = np.clip(np.sqrt(area / aspect), 1, size)
    widths = np.clip(np.sqrt(area * aspect), 1, size)
    tops = rng.uniform(0, 1, count) * (size - heights)
    lefts = rng.uniform(0, 1, count) * (size - widths)
    steps = (np.arange(size) + 0.5) / size
    rows = tops[:, None] + steps[None, :] * heights[:, None] - 0.5  # [N, S] source rows
    columns = lefts[:, None] + steps[None, :] * widths[:, None] - 0.5
    if flip:
        mirrored = rng.random(count) < 0.5
        columns[mirrored] = columns[mirrored, ::-1]
    rows, columns = np.clip(rows, 0, size - 1), np.clip(columns, 0, size - 1)
    top, left = np.floor(rows).astype(int), np.floor(columns).astype(int)
    bottom, right = np.minimum(top + 1, size - 1), np.minimum(left + 1, size - 1)
    down, across = (rows - top)[:, :, None, None], (columns - left)[:, None, :, None]
    index = np.arange(count)[:, None, None]
    pictures = pictures.astype(np.float32)

    def gather(r, c):
        return pictures[index, r[:, :, None], c[:, None, :]]

    upper = gather(top, left) * (1 - across) + gather(top, right) * across
    lower = gather(bottom, left) * (1 - across) + gather(bottom, right) * across
    return np.round(upper * (1 - down) + lower * down).astype(np.uint8)
