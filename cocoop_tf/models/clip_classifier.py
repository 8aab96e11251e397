"""The base of every classifier here: a frozen CLIP, a class set, images in 0..255."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from cocoop_tf.clip.prompts import clean_classnames
from cocoop_tf.clip.tokenizer import decode
from cocoop_tf.layers.image_normalization import CLIPImageNormalization
from cocoop_tf.layers.prompt_text_encoder import PromptTextEncoder
from cocoop_tf.training.batch_guard import PROBLEMS
from cocoop_tf.training.batch_guard import BatchGuard
from cocoop_tf.training.batch_guard import batch_problems
from cocoop_tf.training.batch_guard import in_range


def l2_normalize(x):
    """Scales the last axis to unit Euclidean norm."""
    return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))


class CLIPClassifier(keras.Model):
    """Shared machinery of `ZeroShotCLIP`, `CoOp` and `CoCoOp`; not used directly.

    Subclasses define `tokenize_classnames(names)` (the class token ids the
    model takes) and `classify(images, token_ids)` (logits for any class
    set), and call `set_classnames` at the end of `__init__`.

    `compile()` defaults to the paper's loss (cross-entropy on the logits)
    and an accuracy metric. Training and evaluation stop with an error on a
    batch with NaN or infinite pixels or labels outside the class set (and
    training on a non-finite loss), and undo it: in eager, graph and XLA
    modes alike; `predict` refuses non-finite results.

    Args:
        clip: a frozen `keras_hub.models.CLIPBackbone` (see `load_clip`).
        **kwargs: standard `keras.Model` arguments.
    """

    def __init__(self, clip, **kwargs):
        super().__init__(**kwargs)
        self.clip = clip
        self.image_normalization = CLIPImageNormalization(
            clip.vision_encoder.image_shape[0], dtype=clip.dtype_policy, name="image_normalization"
        )
        self.prompt_text_encoder = PromptTextEncoder(
            clip.text_encoder, clip.text_projection, dtype=clip.dtype_policy, name="prompt_text_encoder"
        )

    def set_classnames(self, classnames, force=False):
        """Replaces the class set (e.g. base -> new classes); learned weights stay.

        Args:
            classnames: list of class names; underscores become spaces.
            force: also when this model is a layer of another Keras model
                (see below).

        Raises:
            ValueError: this model was called on a `keras.Input` to build
                another model, whose traced `predict`, `fit` and `evaluate`
                would keep the old class set. Set the classes before
                building that model (or build it again); or pass
                `force=True` and then call that model's
                `make_predict_function(force=True)` (and `make_train_function`,
                `make_test_function`).
        """
        if getattr(self, "_inbound_nodes", None) and not force:
            raise ValueError(
                f"This {type(self).__name__} is a layer of another Keras model (it was called on a "
                "keras.Input), whose traced predict, fit and evaluate keep the class set they were "
                "traced with. Call set_classnames before building that model, or build it again; "
                "or call set_classnames(..., force=True) and then that model's "
                "make_predict_function(force=True) (and make_train_function / make_test_function)."
            )
        token_ids = self.tokenize_classnames(classnames)
        self._check_known_tokens(token_ids, classnames)
        self.token_ids = token_ids
        self.classnames = clean_classnames(classnames)
        self._forget_traced_functions()

    def _check_known_tokens(self, token_ids, classnames):
        """A backbone that knows only some tokens (the demo's small CLIP) refuses other names."""
        known = getattr(self.clip, "known_token_ids", None)
        if known is None:
            return
        rows = np.asarray(token_ids).reshape(len(classnames), -1)
        for name, row in zip(clean_classnames(classnames), rows):
            unknown = sorted({int(i) for i in row if i and int(i) not in known})
            if unknown:
                words = ", ".join(repr(decode([i]).strip()) for i in unknown[:5])
                raise ValueError(
                    f"This backbone knows only the {len(known)} tokens of its own captions (the "
                    f"demo's small CLIP, for digits and animal silhouettes); the prompt of class "
                    f"{name!r} has tokens it never learned ({words}), whose embeddings are zero. "
                    "Use a real CLIP (e.g. --backbone ViT-B-16.pt or clip_vit_base_patch16) for "
                    "these classes."
                )

    def _forget_traced_functions(self):
        # Traced functions hold the class set's token ids (or features) as constants.
        self.train_function = self.test_function = self.predict_function = None

    def call(self, images):
        # Eager inference refuses bad pixels here; fit and evaluate report them
        # through their batch check (which also works under XLA), predict by its results.
        stepping = getattr(self, "_stepping", False)
        if tf.executing_eagerly() and not stepping and not np.isfinite(keras.ops.convert_to_numpy(images)).all():
            raise ValueError("The images hold NaN or infinite pixel values; check them.")
        return self.classify(images, self.token_ids)

    def encode_images(self, images):
        """Normalised CLIP image features `[B, projection_dim]` of 0..255 images."""
        images = self.image_normalization(images)
        return l2_normalize(self.clip.get_vision_embeddings(images))

    def logit_scale(self, dtype):
        """CLIP's learned temperature, `exp(logit_scale)` (about 100)."""
        return ops.exp(ops.cast(self.clip.clip_head.logit_scale, dtype))

    # --- training and evaluation ---------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """`keras.Model.compile` with the paper's cross-entropy and accuracy by default."""
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics is None:
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, stopping on a bad batch before it changes any weight.

        A batch with NaN or infinite pixels, labels outside the class range,
        or a non-finite loss is undone and raises an error naming it (see
        `cocoop_tf.training.batch_guard`), also under XLA. With a
        `tf.data.Dataset`, `shuffle` defaults to False: a dataset shuffles
        itself (`to_tf_dataset(training=True)` does), and Keras would only
        warn that its default `shuffle=True` is ignored.
        """
        x = args[0] if args else kwargs.get("x")
        if isinstance(x, tf.data.Dataset) and "shuffle" not in kwargs and len(args) < 9:
            kwargs["shuffle"] = False
        kwargs["callbacks"] = self._guarded(kwargs.get("callbacks"))
        return super().fit(*args, **kwargs)

    def evaluate(self, *args, return_dict=False, **kwargs):
        """`keras.Model.evaluate`, stopping on NaN pixels or out-of-range labels."""
        kwargs["callbacks"] = self._guarded(kwargs.get("callbacks"))
        logs = super().evaluate(*args, return_dict=True, **kwargs)
        logs.pop(PROBLEMS, None)
        return logs if return_dict else self._flatten_metrics_in_order(logs)

    def predict(self, *args, **kwargs):
        """`keras.Model.predict`; rows that are not finite (NaN or infinite pixels) are an error."""
        logits = super().predict(*args, **kwargs)
        bad = np.flatnonzero(~np.isfinite(np.asarray(logits)).all(axis=-1))
        if bad.size:
            raise ValueError(
                f"The logits of {bad.size} image(s) are not finite (the first: image "
                f"{bad[0]}): their pixels hold NaN or infinite values. Check the images."
            )
        return logits

    def _guarded(self, callbacks):
        if isinstance(callbacks, keras.callbacks.CallbackList):  # fit's own, for validation
            return callbacks
        callbacks = list(callbacks or [])
        if not any(isinstance(c, BatchGuard) for c in callbacks):
            callbacks.insert(0, BatchGuard(len(self.classnames)))
        return callbacks

    def train_step(self, data):
        return self._checked_step(super().train_step, data)

    def test_step(self, data):
        return self._checked_step(super().test_step, data)

    def _checked_step(self, step, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("Training and evaluation need (images, labels) pairs.")
        problems = batch_problems(x, y, len(self.classnames))
        data = keras.utils.pack_x_y_sample_weight(x, in_range(y, len(self.classnames)), sample_weight)
        self._stepping = True
        try:
            return {**step(data), PROBLEMS: problems}
        finally:
            self._stepping = False

    # --- serialisation -------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        # The backbone itself, not its serialised copy: Keras serialises it, and
        # marks it as shared when several classifiers of one model hold it, so
        # that the saved model holds it (and its weights) once.
        config.update({"clip": self.clip, "classnames": self.classnames})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["clip"], dict):
            config["clip"] = keras.layers.deserialize(config["clip"])
        return cls(**config)
