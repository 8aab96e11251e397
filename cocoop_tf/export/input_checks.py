"""In-graph checks of served inputs: bad requests fail, they never get an answer."""

import tensorflow as tf

from cocoop_tf.clip.tokenizer import EOT_TOKEN_ID
from cocoop_tf.clip.tokenizer import SOT_TOKEN_ID


def require(value, condition, *message):
    """Returns `value` once `condition` holds; otherwise the graph fails.

    In TensorFlow (a loaded SavedModel, TF Serving) the failure is an
    `InvalidArgumentError` carrying `message`. The TFLite converter drops
    assertions, so `value` also goes through a one-element gather whose index
    is out of bounds when `condition` is false: the interpreter then stops
    ("gather index out of bounds") instead of computing on the bad input.
    Checks of values chained on the returned tensor run in order; the graph
    optimiser may compute a check of its shape early, from the input's own
    shape, so such checks must be safe for any input (see `check_images`).

    Args:
        value: the tensor being checked.
        condition: scalar boolean tensor.
        *message: strings and tensors shown in TensorFlow's error.
    """
    assertion = tf.debugging.Assert(condition, list(message), summarize=16)
    with tf.control_dependencies([assertion]):
        return tf.gather(value[None], tf.where(condition, 0, 1))


def check_images(images, image_size):
    """Checks that `images` is `[batch >= 1, image_size, image_size, 3]` of pixels 0..255.

    Args:
        images: float tensor of RGB pixel values 0..255.
        image_size: the backbone's resolution.

    Returns:
        `images`, with the static shape `[None, image_size, image_size, 3]`.
    """
    # Conditions on the input's own shape, safe for any rank (TF Serving feeds
    # whatever a request holds: `[]`, one image `[S, S, 3]`), and each true
    # where an earlier one fails: the optimiser may evaluate shape checks in any
    # order, and the message must name the first problem.
    shape = tf.shape(images)
    dims = _dims(shape, 4)
    shaped = _has_rank(shape, 4) & tf.reduce_all(tf.equal(dims[1:], [image_size, image_size, 3]))
    images = require(
        images, shaped,
        f"images must be RGB pixel values 0..255 of shape [batch, {image_size}, "
        f"{image_size}, 3] (resize the short side to {image_size} and centre-crop; a "
        "single image too needs the batch axis). Got shape:",
        shape,
    )
    images = require(
        images, ~shaped | (dims[0] > 0),
        f"images holds no image: send a batch of at least one, shape [batch >= 1, "
        f"{image_size}, {image_size}, 3]. Got shape:",
        shape,
    )
    # NaN fails both comparisons. Values far outside 0..255 (e.g. -1e6, 3e38)
    # still give confident probabilities, so they are refused too.
    valid = (images >= 0.0) & (images <= 255.0)
    images = require(
        images, tf.reduce_all(valid),
        "images must hold finite pixel values in 0..255 (RGB, not scaled to 0..1 and not "
        "normalised: the graph applies CLIP's mean and std). Values that are NaN, "
        "infinite or outside 0..255, then the smallest and largest value:",
        tf.reduce_sum(tf.cast(~valid, tf.int32)), tf.reduce_min(images), tf.reduce_max(images),
    )
    # Static again for the converter and XNNPACK where the input was declared dynamic.
    return tf.reshape(images, (-1, image_size, image_size, 3))


def check_token_ids(token_ids, context_length, n_ctx):
    """Checks tokenised class names and cuts their padding after the last end token.

    Each row must be `[SOS] name tokens [EOS] 0...` as made by
    `cocoop_tf.tokenize_classnames` (or a zero-shot prompt's ids), with the
    end token where it still fits beside `n_ctx` context vectors: the text
    encoder finds it as the row's largest id and would silently read another
    position otherwise. Trailing padding is cut because the causal text
    encoder's end-token feature never depends on it.

    Args:
        token_ids: int32 `[C, L]`.
        context_length: the text encoder's context length (77 for CLIP).
        n_ctx: learned context vectors inserted after the start token.

    Returns:
        `token_ids[:, :last end token + 1]`.
    """
    # Shapes first, as in `check_images`: conditions on the input's own shape,
    # each true where an earlier one fails. A request may hold anything, e.g.
    # `[]` (shape [0]), which TF Serving feeds as it is.
    shape = tf.shape(token_ids)
    length = _dims(shape, 2)[1]
    filled = tf.reduce_prod(shape) > 0
    token_ids = require(
        token_ids,
        filled,
        "token_ids holds no class: send at least one tokenised class name "
        "(a row of cocoop_tf.tokenize_classnames(names)).",
    )
    matrix = _has_rank(shape, 2)
    token_ids = require(
        token_ids,
        ~filled | matrix,
        "token_ids must be int32 of shape [classes, ids] (one row per class name, "
        "even for one class). Got shape:",
        shape,
    )
    token_ids = require(
        token_ids,
        ~filled | ~matrix | ((length >= 2) & (length <= context_length)),
        f"token_ids rows must have 2 to {context_length} ids (the text encoder's "
        "context length). Got shape:",
        shape,
    )
    token_ids = require(
        token_ids,
        tf.reduce_all(tf.equal(token_ids[:, 0], SOT_TOKEN_ID)),
        f"Every row of token_ids must start with the start token {SOT_TOKEN_ID}, "
        "as cocoop_tf.tokenize_classnames makes them. First ids:",
        token_ids[:, 0],
    )
    token_ids = require(
        token_ids,
        tf.reduce_all(tf.equal(tf.reduce_max(token_ids, axis=1), EOT_TOKEN_ID))
        & tf.reduce_all(token_ids >= 0),
        f"Every row of token_ids must contain the end token {EOT_TOKEN_ID} and only "
        f"ids in [0, {EOT_TOKEN_ID}]. Largest id of each row:",
        tf.reduce_max(token_ids, axis=1),
    )
    end = tf.argmax(token_ids, axis=1, output_type=tf.int32)
    limit = context_length - n_ctx
    token_ids = require(
        token_ids,
        tf.reduce_all(end < limit),
        f"A class name is too long: its end token must be at index < {limit} so "
        f"that the prompt, with {n_ctx} learned context vectors, fits the context "
        f"length {context_length}. Shorten the name. End-token index of each row:",
        end,
    )
    return token_ids[:, : tf.reduce_max(end) + 1]


def check_num_classes(token_ids, num_classes):
    """Checks that `token_ids` holds exactly `num_classes` rows.

    Args:
        token_ids: int32 `[C, L]`.
        num_classes: the class count a class-specific context was learned for.
    """
    return require(
        token_ids,
        tf.equal(tf.shape(token_ids)[0], num_classes),
        f"This model learned one context per class for {num_classes} classes: "
        f"token_ids must hold exactly those {num_classes} class names, in training "
        "order. Number of rows sent:",
        tf.shape(token_ids)[0],
    )


def check_features(features, dim, name):
    """Checks that a feature matrix is `[N >= 1, dim]` and finite.

    Args:
        features: float `[N, dim]`.
        dim: the feature size (the backbone's projection dimension).
        name: the input's name, for the messages.
    """
    shape = tf.shape(features)
    dims = _dims(shape, 2)
    shaped = _has_rank(shape, 2) & tf.equal(dims[1], dim)
    features = require(
        features,
        shaped,
        f"{name} must be float32 of shape [rows, {dim}] (the outputs of the "
        f"{name} signature). Got shape:",
        shape,
    )
    features = require(
        features, ~shaped | (dims[0] > 0), f"{name} is empty: send at least one row."
    )
    finite = tf.math.is_finite(features)
    return require(
        features,
        tf.reduce_all(finite),
        f"{name} holds NaN or infinite values; send the {name} signature's outputs. "
        "Non-finite values:",
        tf.reduce_sum(tf.cast(~finite, tf.int32)),
    )


def _dims(shape, rank):
    """The first `rank` entries of `shape`, padded with -1 for an input of lower rank."""
    return tf.concat([shape, tf.fill([rank], -1)], 0)[:rank]


def _has_rank(shape, rank):
    """Whether `shape` has `rank` entries, measured at run time.

    Not `tf.rank` or `tf.size(shape)`: both fold into the declared rank when
    the graph is built, and TF Serving feeds inputs of any rank.
    """
    dims = _dims(shape, rank + 1)
    return (dims[rank - 1] >= 0) & (dims[rank] < 0)
