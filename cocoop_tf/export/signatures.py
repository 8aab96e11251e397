"""What an exported model serves: its signature functions and its input contract."""

import tensorflow as tf

from cocoop_tf.clip.tokenizer import EOT_TOKEN_ID
from cocoop_tf.clip.tokenizer import SOT_TOKEN_ID
from cocoop_tf.export.input_checks import check_features
from cocoop_tf.export.input_checks import check_images
from cocoop_tf.export.input_checks import check_num_classes
from cocoop_tf.export.input_checks import check_token_ids
from cocoop_tf.models.clip_classifier import CLIPClassifier

EXPORT_FORMAT = "cocoop_tf.export/1"


def serving_functions(model, dynamic_image_shape=False):
    """The functions an export serves, by signature name, with their input specs.

    - `serving_default(images, token_ids) -> {logits, probabilities}`, for
      every model, built on `model.classify`: any class set, given as ids.
    - `image_features(images) -> {image_features}`: normalised CLIP features.
    - Models whose class features do not depend on the image (zero-shot
      CLIP, CoOp, KgCoOp, MaPLe, IVLP, PromptSRC: `image_conditional` False):
      `text_features(token_ids) -> {text_features}` (normalised),
      and `classify_features(image_features, text_features) -> {logits,
      probabilities}`, so that a client can cache the features of a class set.

    `images` are float32 RGB pixel values 0..255, `[B, S, S, 3]`; `token_ids`
    are int32 `[C, L]`, see `serving_token_ids`. Bad inputs fail the graph
    (see `input_checks`).

    Args:
        model: a classifier of a registered method (`CLIPClassifier`); a
            `ZeroShotCLIP` with one template.
        dynamic_image_shape: declare `images` as `[None, None, None, None]`
            and check its shape at run time only. TFLite needs this: its
            converter folds shape checks away against a declared shape, and
            its interpreter accepts inputs of any shape.

    Returns:
        dict of name -> (function, list of `tf.TensorSpec`).
    """
    info = model_info(model)
    size, context_length, n_ctx = info["image_size"], info["context_length"], info["n_ctx"]
    images_spec = tf.TensorSpec(
        (None, None, None, None) if dynamic_image_shape else (None, size, size, 3),
        tf.float32,
        name="images",
    )
    token_ids_spec = tf.TensorSpec((None, None), tf.int32, name="token_ids")
    dim = model.clip.projection_dim

    def class_token_ids(token_ids):
        if info["class_specific"]:
            token_ids = check_num_classes(token_ids, len(model.classnames))
        return check_token_ids(token_ids, context_length, n_ctx)

    def serving_default(images, token_ids):
        logits = model.classify(check_images(images, size), class_token_ids(token_ids))
        return _logits_and_probabilities(logits)

    def image_features(images):
        features = model.encode_images(check_images(images, size))
        return {"image_features": tf.cast(features, tf.float32)}

    functions = {
        "serving_default": (serving_default, [images_spec, token_ids_spec]),
        "image_features": (image_features, [images_spec]),
    }
    if not model.image_conditional:

        def text_features(token_ids):
            features = model.class_features(class_token_ids(token_ids))
            return {"text_features": tf.cast(features, tf.float32)}

        def classify_features(image_features, text_features):
            image_features = check_features(image_features, dim, "image_features")
            text_features = check_features(text_features, dim, "text_features")
            logits = tf.matmul(image_features, text_features, transpose_b=True)
            return _logits_and_probabilities(model.logit_scale(tf.float32) * logits)

        features_spec = [
            tf.TensorSpec((None, dim), tf.float32, name="image_features"),
            tf.TensorSpec((None, dim), tf.float32, name="text_features"),
        ]
        functions["text_features"] = (text_features, [token_ids_spec])
        functions["classify_features"] = (classify_features, features_spec)
    return functions


def model_info(model):
    """The input contract of a model's export, as plain JSON-able values.

    Written next to a SavedModel as `assets.extra/cocoop_tf.json` for
    clients: the image size, how to tokenise class names (`prompt`, with
    `{}` for the cleaned class name), the context length and the largest
    index the end token may have.

    Args:
        model: a classifier of a registered method.

    Raises:
        ValueError: for a model that cannot be exported (see
            `export_description`), or a model of another kind.
    """
    if not isinstance(model, CLIPClassifier):
        raise ValueError(
            f"Cannot export a {type(model).__name__}: expected a cocoop_tf classifier "
            "(CoCoOp, CoOp, ZeroShotCLIP or another registered method)."
        )
    description = model.export_description()
    prompt, n_ctx, class_specific = description["prompt"], description["n_ctx"], description["class_specific"]
    context_length = model.clip.text_encoder.max_sequence_length
    return {
        "format": EXPORT_FORMAT,
        "method": type(model).__name__,
        "image_size": model.clip.vision_encoder.image_shape[0],
        "prompt": prompt,
        "context_length": context_length,
        "n_ctx": n_ctx,
        "max_end_token_index": context_length - n_ctx - 1,
        "start_token_id": SOT_TOKEN_ID,
        "end_token_id": EOT_TOKEN_ID,
        "class_specific": class_specific,
        "classnames": list(model.classnames),
    }


def serving_token_ids(model, classnames):
    """The `token_ids` input that an export of `model` takes for `classnames`.

    `model.tokenize_classnames(names)`: for CoOp and CoCoOp
    `cocoop_tf.tokenize_classnames(names)`, the ids of `"{name}."`; for
    MaPLe, IVLP and PromptSRC those of `"{fixed words} {name}."`, the words
    of `ctx_init` after its first `n_ctx` tokens, which stay text (MaPLe's
    2 vectors: `"of a {name}."`; IVLP's and PromptSRC's 4: `"{name}."`);
    for zero-shot CLIP the ids of its template filled with each name. Rows
    are `[SOS] tokens [EOS] 0...`, int32 `[C, context_length]`.

    Args:
        model: the exported model.
        classnames: list of class names (underscores become spaces).
    """
    model_info(model)  # rejects what cannot be exported
    return model.tokenize_classnames(classnames)


def _logits_and_probabilities(logits):
    logits = tf.cast(logits, tf.float32)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits)}
