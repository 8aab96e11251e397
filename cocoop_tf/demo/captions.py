"""Captions for pretraining the small CLIP: varied wordings that name the class.

A caption is a template around the class name, which is sometimes preceded
by the ink colour of the image: "a photo of a red cat.", "a drawing of the
digit three.". A template either says nothing about how the picture was
drawn (`PLAIN_TEMPLATES`) or names one photographic effect of
`rendering.EFFECTS` ("a faded photo of a {}.", `EFFECT_TEMPLATES`), mostly in
the words before the class name, where a learned prompt's context sits.
Every caption that can occur is tokenised once into a table indexed by
(template, class, colour mention), where mention 0 means the colour is not
named and `c + 1` names colour `c` of `rendering.INK_COLOURS`.
"""

import itertools

import numpy as np

from cocoop_tf.clip.tokenizer import EOT_TOKEN_ID
from cocoop_tf.clip.tokenizer import SOT_TOKEN_ID
from cocoop_tf.clip.tokenizer import tokenize
from cocoop_tf.demo.rendering import COLOUR_WORDS
from cocoop_tf.demo.rendering import EFFECTS
from cocoop_tf.demo.rendering import NO_EFFECT

# The zero-shot template of the demo (and CLIP's default one).
ZERO_SHOT_TEMPLATE = "a photo of a {}."

# Wordings for pictures without an effect.
PLAIN_TEMPLATES = (
    ZERO_SHOT_TEMPLATE,
    "a picture of a {}.",
    "an image of the {}.",
    "a drawing of the {}.",
    "a sketch of a {}.",
    "a {} on a dark background.",
    "a low resolution photo of a {}.",
    "this is a {}.",
    "a {} on black.",
    "{}",
    "a photo of the {}.",
    "a small photo of a {}.",
    "a close-up photo of the {}.",
    "a cropped picture of a {}.",
    "a rendering of a {}.",
    "there is a {} in the picture.",
    "a photo of my {}.",
    "an illustration of one {}.",
    "a clean photo of a {}.",
    "a sharp picture of the {}.",
)
# Wordings for pictures with one effect (keys: `rendering.EFFECTS`).
EFFECT_TEMPLATES = {
    "faded": (
        "a faded photo of a {}.", "a faded picture of the {}.", "a dim photo of a {}.",
        "a washed out image of a {}.",
    ),
    "grey background": (
        "a photo of a {} on a grey background.", "a {} on grey paper.", "a grey photo of the {}.",
        "a picture of a {} on grey.",
    ),
    "noisy": (
        "a noisy photo of a {}.", "a grainy picture of the {}.", "a noisy image of a {}.",
        "a speckled photo of a {}.",
    ),
    "blurry": (
        "a blurry photo of a {}.", "a blurred picture of the {}.", "an out of focus photo of a {}.",
        "a soft image of a {}.",
    ),
}
CAPTION_TEMPLATES = PLAIN_TEMPLATES + tuple(t for effect in EFFECTS for t in EFFECT_TEMPLATES[effect])
# The effect each template of `CAPTION_TEMPLATES` names (`NO_EFFECT` for the plain ones).
TEMPLATE_EFFECTS = tuple(
    [NO_EFFECT] * len(PLAIN_TEMPLATES)
    + [index for index, effect in enumerate(EFFECTS) for _ in EFFECT_TEMPLATES[effect]]
)


def caption_table(classnames, templates=CAPTION_TEMPLATES, context_length=77):
    """The token ids of every caption that can occur.

    Args:
        classnames: class names in label order.
        templates: caption templates with one `{}`.
        context_length: the text encoder's context length.

    Returns:
        int32 array `[templates, classes, 1 + colours, L]` (colour mention 0:
        none); each row is `[SOS] tokens [EOS] 0...`, cut after the longest
        caption's end token (nothing after an end token affects CLIP's text
        feature).
    """
    texts = [
        template.format(f"{colour} {name}" if colour else name)
        for template, name, colour in itertools.product(templates, classnames, (None, *COLOUR_WORDS))
    ]
    ids = tokenize(texts, context_length)
    length = int(np.max(np.argmax(ids == EOT_TOKEN_ID, axis=-1))) + 1
    return ids[:, :length].reshape(len(templates), len(classnames), 1 + len(COLOUR_WORDS), length)


def used_token_ids(token_ids):
    """The distinct vocabulary ids that captions use (start and end tokens included).

    Args:
        token_ids: int array `[..., L]` of caption token ids, each row
            `[SOS] tokens [EOS]` then padding.

    Returns:
        Sorted int32 array of ids. Only these rows of the token embedding
        receive gradients during pretraining: the padding after an end
        token never reaches the end token's feature in a causal model.
    """
    rows = np.asarray(token_ids).reshape(-1, np.shape(token_ids)[-1])
    end = np.argmax(rows == EOT_TOKEN_ID, axis=-1)
    within = np.arange(rows.shape[1])[None, :] <= end[:, None]
    return np.union1d(rows[within], [SOT_TOKEN_ID, EOT_TOKEN_ID]).astype(np.int32)
