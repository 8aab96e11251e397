"""Captions for pretraining the small CLIP: varied wordings that name the class.

A caption is a template around the class name, which is sometimes preceded
by the ink colour of the image: "a photo of a red cat.", "a drawing of the
digit three.". Every caption that can occur is tokenised once into a table
indexed by (template, class, colour mention), where mention 0 means the
colour is not named and `c + 1` names colour `c` of `rendering.INK_COLOURS`.
"""

import itertools

import numpy as np

from cocoop_tf.clip.tokenizer import EOT_TOKEN_ID
from cocoop_tf.clip.tokenizer import SOT_TOKEN_ID
from cocoop_tf.clip.tokenizer import tokenize
from cocoop_tf.demo.rendering import COLOUR_WORDS

# The zero-shot template of the demo (and CLIP's default one).
ZERO_SHOT_TEMPLATE = "a photo of a {}."

CAPTION_TEMPLATES = (
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
