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
    Callers chain checks on the returned tensor, so they run in order.

    Args:
        value: the tensor being checked.
        condition: scalar boolean tensor.
        *message: strings and tensors shown in TensorFlow's error.
    """
    assertion = tf.debugging.Assert(condition, list(message), summarize=16)
    with tf.control_dependencies([assertion]):
        return tf.gather(value[None], tf.where(condition, 0, 1))


def check_images(images, image_size):
    """Checks that `images` is `[batch, image_size, image_size, 3]` and finite.

    Args:
        images: float tensor of RGB pixel values 0..255.
        image_size: the backbone's resolution.

    Returns:
        `images`, with the static shape `[None, image_size, image_size, 3]`.
    """
    message = (
        f"images must be RGB pixel values 0..255 of shape [batch, {image_size}, "
        f"{image_size}, 3]: resize the short side to {image_size} and centre-crop. Got shape:"
    )
    # The rank first: TF Serving feeds whatever a request holds, e.g. `[]`.
    images = require(images, tf.equal(tf.rank(images), 4), message, tf.shape(images))
    shape = tf.shape(images)
    images = require(
        images, tf.reduce_all(tf.equal(shape[1:], [image_size, image_size, 3])), message, shape
    )
    finite = tf.math.is_finite(images)
    images = require(
        images, tf.reduce_all(finite),
        "images hold NaN or infinite pixel values; send RGB values 0..255. Non-finite values:",
        tf.reduce_sum(tf.cast(~finite, tf.int32)),
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
    # Shapes first, each check on the previous one's output: a request may hold
    # anything, e.g. `[]` (shape [0]), which TF Serving feeds as it is.
    token_ids = require(
        token_ids,
        tf.reduce_prod(tf.shape(token_ids)) > 0,
        "token_ids holds no class: send at least one tokenised class name "
        "(a row of cocoop_tf.tokenize_classnames(names)).",
    )
    token_ids = require(
        token_ids,
        tf.equal(tf.rank(token_ids), 2),
        "token_ids must be int32 [classes, ids]. Got shape:",
        tf.shape(token_ids),
    )
    shape = tf.shape(token_ids)
    token_ids = require(
        token_ids,
        (shape[1] >= 2) & (shape[1] <= context_length),
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


def check_features(features, name):
    """Checks that a feature matrix `[N, D]` is not empty.

    Args:
        features: float `[N, D]`.
        name: the input's name, for the message.
    """
    return require(
        features,
        tf.shape(features)[0] > 0,
        f"{name} is empty: send at least one row.",
    )
