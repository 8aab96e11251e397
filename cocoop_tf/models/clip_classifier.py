"""The base of every classifier here: a frozen CLIP, a class set, images in 0..255."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from cocoop_tf.clip.backbone import fingerprint
from cocoop_tf.clip.prompts import clean_classnames
from cocoop_tf.clip.tokenizer import decode
from cocoop_tf.layers.clip_image_encoder import CLIPImageEncoder
from cocoop_tf.layers.prompt_text_encoder import PromptTextEncoder
from cocoop_tf.models.prompt_file import load_prompt
from cocoop_tf.models.prompt_file import model_for_prompt
from cocoop_tf.models.prompt_file import write_prompt
from cocoop_tf.training.batch_guard import PROBLEMS
from cocoop_tf.training.batch_guard import BatchGuard
from cocoop_tf.training.batch_guard import batch_problems
from cocoop_tf.training.batch_guard import in_range
from cocoop_tf.training.workers import spans_workers


def l2_normalize(x):
    """Scales the last axis to unit Euclidean norm."""
    return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))


class CLIPClassifier(keras.Model):
    """The contract every method keeps; the base of `ZeroShotCLIP`, `CoOp` and `CoCoOp`.

    A method subclasses this, sets the class attributes below, builds its
    sub-layers in `__init__` and calls `set_classnames` last, and defines:

    - `tokenize_classnames(names)`: the class token ids it takes, int32
      `[C, L]` (the export's `token_ids` input);
    - `classify(images, token_ids)`: logits `[B, C]` for 0..255 images
      `[B, S, S, 3]` and any class set's ids; the model's `call(images)` is
      `classify` on its own class set, and `call(images, token_ids=ids)`
      is `classify` (a class set that is an input of a functional graph);
      by default the logits of `class_features`, so only a method whose
      class features depend on the image (CoCoOp) defines it;
    - `class_features(token_ids)`: normalised class features `[C, D]`, for
      methods whose class features do not depend on the image
      (`image_conditional = False`), so that they can be cached and served
      apart; logits are then `logit_scale * image_features @ features.T`.

    Registered with `cocoop_tf.models.register_method`, it is a method of
    every command (`--methods`), of prompt files and of export.

    A method whose training keeps state beyond its trainable weights and the
    optimizer's (PromptSRC's running sums of the prompts over epochs) lists
    those variables in `resume_variables`: a resumable checkpoint saves and
    restores them, and multi-worker training copies them from the chief.
    They are not part of prompt files, which hold the trainable weights.

    `compile()` defaults to the paper's loss (cross-entropy on the logits)
    and an accuracy metric; a compiled model saved to a `.keras` file loads
    back compiled. The model and its layers compute in the backbone's dtype
    policy. Training and evaluation stop with an error on a
    batch with NaN or infinite pixels or labels outside the class set (and
    training on a non-finite loss), and undo it: in eager, graph and XLA
    modes alike; `predict` refuses non-finite results.

    Class attributes:
        method: the name on the command line and in the registry ("coop").
        display_name: the name in tables ("CoOp").
        learns: False for a method that trains nothing (zero-shot CLIP).
        image_conditional: True when class features depend on the image
            (CoCoOp): such a model has no `class_features`.
        run_settings: the `RunConfig` settings passed to the constructor
            under the same names (see `from_run_config`).
        runs_by_default: False for a method that runs only when named in
            `--methods` (the CoCoOp paper's methods run by default).
        paper_settings: `RunConfig` settings of the method's paper (e.g.
            `{"epochs": 100, "batch_size": 128}`), used where a run leaves
            them unset; the others are the CoCoOp paper's.

    Args:
        clip: a frozen `keras_hub.models.CLIPBackbone` (see `load_clip`).
        **kwargs: standard `keras.Model` arguments.
    """

    method = None
    display_name = None
    learns = True
    image_conditional = False
    run_settings = ()
    runs_by_default = True
    paper_settings = {}

    def __init__(self, clip, **kwargs):
        policy = keras.mixed_precision.global_policy()
        if "dtype" not in kwargs and policy.name != "float32" and policy.name != clip.dtype_policy.name:
            raise ValueError(
                f"The global dtype policy is {policy.name!r} but the backbone computes in "
                f"{clip.dtype_policy.name!r}: it was loaded before the policy was set. Load it "
                f"after keras.mixed_precision.set_global_policy (or with load_clip(..., "
                f"dtype={policy.name!r})), so that the whole model computes in one policy."
            )
        # The model and every layer it adds compute in the backbone's policy.
        kwargs.setdefault("dtype", clip.dtype_policy)
        super().__init__(**kwargs)
        self.clip = clip
        self.image_encoder = CLIPImageEncoder(
            clip.vision_encoder, clip.vision_pooler, clip.vision_projection, dtype=clip.dtype_policy,
            name="image_encoder",
        )
        self.prompt_text_encoder = PromptTextEncoder(
            clip.text_encoder, clip.text_projection, dtype=clip.dtype_policy, name="prompt_text_encoder"
        )

    @classmethod
    def check_run_settings(cls, settings):
        """Raises ValueError naming a run setting this method cannot take (before a run starts).

        Args:
            settings: the method's run settings (`RunConfig.for_method`'s, as a dict).
        """

    @classmethod
    def from_run_config(cls, clip, classnames, settings):
        """The model a run builds: its constructor given its `run_settings`.

        Args:
            clip: the frozen backbone.
            classnames: the class set.
            settings: dict of run settings (`RunConfig.to_dict()`, with
                `template` set to the templates of the run's dataset).
        """
        return cls(clip, classnames, **{name: settings[name] for name in cls.run_settings})

    @property
    def resume_variables(self):
        """Variables besides the trainable weights that resuming training needs (default none).

        See the class docstring: checkpoints save and restore them, and
        multi-worker training broadcasts them from the chief.
        """
        return []

    # --- the class set -------------------------------------------------------------

    def tokenize_classnames(self, classnames):
        """The class token ids `[C, L]` this model (and its export) takes."""
        raise NotImplementedError(f"{type(self).__name__} defines no tokenize_classnames.")

    def classify(self, images, token_ids):
        """Logits `[B, C]` for 0..255 images `[B, S, S, 3]` and class token ids `[C, L]`.

        By default `feature_logits(encode_images(images), class_features(token_ids))`;
        a method whose class features depend on the image defines its own.
        """
        return self.feature_logits(self.encode_images(images), self.class_features(token_ids))

    def class_features(self, token_ids):
        """Normalised class features `[C, projection_dim]` of class token ids `[C, L]`.

        Raises:
            ValueError: the method's class features depend on the image.
        """
        raise ValueError(
            f"{type(self).__name__}'s class features depend on the image; use classify(images, token_ids)."
        )

    @property
    def classes_fixed(self):
        """True when the learned weights belong to these classes (one context per class)."""
        return False

    def export_description(self):
        """How an export's clients tokenise class names, as JSON-able values.

        Returns:
            dict with `prompt` (the text tokenised per class, `{}` for the
            cleaned class name), `n_ctx` (positions the model adds to each
            prompt) and `class_specific` (`classes_fixed`).
        """
        return {"prompt": "{}.", "n_ctx": 0, "class_specific": self.classes_fixed}

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

    def call(self, images, token_ids=None):
        """Logits `[B, C]` of 0..255 images for the model's classes, or for `token_ids` `[C, L]`.

        Given `token_ids`, this is `classify`: in a functional model, a class
        set that is an input of the graph (see the README's "Your own Keras
        graphs").
        """
        # Eager inference refuses bad pixels here; fit and evaluate report them
        # through their batch check (which also works under XLA), predict by its results.
        stepping = getattr(self, "_stepping", False)
        if tf.executing_eagerly() and not stepping and not np.isfinite(keras.ops.convert_to_numpy(images)).all():
            raise ValueError("The images hold NaN or infinite pixel values; check them.")
        if token_ids is not None:
            return self.classify(images, token_ids)
        return self.classify(images, self.token_ids)

    def compute_output_shape(self, images_shape, token_ids_shape=None):
        classes = len(self.classnames) if token_ids_shape is None else token_ids_shape[0]
        return (images_shape[0], classes)

    def encode_images(self, images):
        """Normalised CLIP image features `[B, projection_dim]` of 0..255 images."""
        return self.image_encoder(images)

    def feature_logits(self, image_features, text_features):
        """`logit_scale * image_features @ text_features.T`, `[B, C]`, of normalised features.

        Called eagerly (e.g. on cached `class_features`), features that hold
        NaN or infinite values are refused, as the export's
        `classify_features` refuses them: their logits would be NaN.
        """
        if tf.executing_eagerly() and not getattr(self, "_stepping", False):
            for name, features in (("image_features", image_features), ("text_features", text_features)):
                if not np.isfinite(ops.convert_to_numpy(features)).all():
                    raise ValueError(
                        f"The {name} hold NaN or infinite values; pass the outputs of "
                        f"{'encode_images' if name == 'image_features' else 'class_features'} "
                        "(finite for finite images and weights)."
                    )
        text_features = ops.cast(text_features, image_features.dtype)
        logits = ops.matmul(image_features, ops.transpose(text_features))
        return self.logit_scale(logits.dtype) * logits

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

    def compile_from_config(self, config):
        # Keras skips this for a model whose compile() is overridden; ours only
        # fills in defaults, so a loaded `.keras` model comes back compiled.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

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

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a distribution strategy Keras builds the model from a first batch, which it
        # all-reduces only to learn its structure; across workers that reduce fails
        # (keras-team/keras#20585). One local replica's part of the batch has the same structure.
        if iterator is not None and getattr(self, "_distribute_strategy", None) is not None:
            strategy = self._distribute_strategy
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(batches),
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def evaluate(self, *args, return_dict=False, **kwargs):
        """`keras.Model.evaluate`, stopping on NaN pixels or out-of-range labels."""
        kwargs["callbacks"] = self._guarded(kwargs.get("callbacks"))
        logs = super().evaluate(*args, return_dict=True, **kwargs)
        logs.pop(PROBLEMS, None)
        return logs if return_dict else self._flatten_metrics_in_order(logs)

    def predict(self, *args, **kwargs):
        """`keras.Model.predict`; rows that are not finite (NaN or infinite pixels) are an error.

        No images (an array or tensor of batch size 0) give logits `[0, C]`.
        """
        x = args[0] if args else kwargs.get("x")
        if getattr(x, "shape", None) is not None and len(x.shape) and x.shape[0] == 0:
            # Keras' predict loop fails without a batch; the model itself answers none.
            return ops.convert_to_numpy(self(x))
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
            logs = {**step(data), PROBLEMS: problems}
        finally:
            self._stepping = False
        if spans_workers(tf.distribute.get_strategy()):
            # Across workers Keras concatenates each step output over the replicas along
            # axis 0 and takes the mean, which needs a leading axis (a scalar fails; the two
            # counts of PROBLEMS would be averaged together).
            logs = {name: ops.expand_dims(value, 0) for name, value in logs.items()}
        return logs

    # --- prompt files --------------------------------------------------------------

    @property
    def backbone_fingerprint(self):
        """`cocoop_tf.clip.backbone.fingerprint` of the frozen backbone, computed once."""
        if getattr(self, "_backbone_fingerprint", None) is None:
            self._backbone_fingerprint = fingerprint(self.clip)
        return self._backbone_fingerprint

    def save_prompt(self, path, training=None):
        """Writes only the learned weights (context, Meta-Net) to a safetensors file.

        About 140 KB for CoCoOp on ViT-B/16; apply it to a separately loaded
        backbone with `load_prompt` or `from_prompt`. The file also records
        the model's config (its `get_config()` without the backbone), a
        fingerprint of the backbone's weights (a prompt means nothing on
        another CLIP), and optionally how it was trained. It is written
        whole or not at all. See `cocoop_tf.models.prompt_file`.

        Args:
            path: output file, conventionally `*.safetensors`.
            training: optional JSON-able dict of the training settings
                (dataset, shots, seed, epochs, ...), read back by
                `read_prompt` and reported when the prompt is evaluated.
        """
        write_prompt(path, self, self.backbone_fingerprint, training)

    def load_prompt(self, path, force=False):
        """Loads learned weights written by `save_prompt` into this model.

        Args:
            path: a prompt checkpoint file.
            force: load a prompt trained on a backbone with other weights
                (same widths) anyway, with a warning; by default refused.

        Raises:
            ValueError: the file was made for another method, weight shapes
                or backbone width, or (without `force`) another backbone.
        """
        load_prompt(self, path, force)

    @classmethod
    def from_prompt(cls, clip, path, classnames=None, force=False, **kwargs):
        """Builds the model on `clip` with the learned weights of a prompt file.

        The model is `from_config` of the config the file records, with
        `clip` as its backbone. The file is read as untrusted input: its
        sizes, tensor types and settings are checked (against the method,
        the tensors in the file and `clip`) before anything is built.

        Args:
            clip: the backbone the prompt was trained on.
            path: a prompt checkpoint written by `save_prompt`.
            classnames: the classes to classify; default the training classes.
            force: see `load_prompt`.
            **kwargs: constructor arguments that replace the recorded ones.

        Raises:
            ValueError: naming the file and what does not fit.
        """
        return model_for_prompt(cls, clip, path, classnames=classnames, force=force, **kwargs)

    @classmethod
    def check_prompt_config(cls, config, shapes):
        """Raises ValueError where a prompt file's settings disagree with its tensors.

        Called by `from_prompt` before the model is built, so that a damaged
        or hostile file (e.g. 20 million context vectors) builds nothing.

        Args:
            config: the settings `from_config` will be given (without the backbone).
            shapes: the shape tuple of each tensor in the file, by variable path.
        """

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
