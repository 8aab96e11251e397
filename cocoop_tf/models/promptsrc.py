"""PromptSRC: IVLP's prompts, kept close to the frozen CLIP, aggregated over epochs."""

import inspect
import math
import numbers

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from cocoop_tf.clip.imagenet_templates import IMAGENET_TEMPLATES
from cocoop_tf.clip.prompts import shown
from cocoop_tf.clip.prompts import tokenize_prompts
from cocoop_tf.models.clip_classifier import l2_normalize
from cocoop_tf.models.ivlp import IVLP
from cocoop_tf.models.registry import register_method
from cocoop_tf.models.zero_shot_clip import TEXT_BATCH_SIZE
from cocoop_tf.training.prompt_aggregation import GaussianPromptAggregation
from cocoop_tf.training.prompt_aggregation import gpa_weights

# The self-regularising terms, in the order of `loss_terms` and of fit's logs.
REGULARISERS = ("text_l1", "image_l1", "kl")


def logits_kl(logits, frozen_logits):
    """PromptSRC's logit term: KL(softmax(frozen) || softmax(logits)), summed, over the logits' count.

    `F.kl_div(log_softmax(logits), log_softmax(frozen), reduction="sum",
    log_target=True) / logits.numel()`, as the official trainer computes it.

    Args:
        logits: the prompted model's logits `[B, C]`.
        frozen_logits: the frozen CLIP's logits `[B, C]`.
    """
    log_p = ops.log_softmax(frozen_logits, axis=-1)
    log_q = ops.log_softmax(logits, axis=-1)
    count = ops.cast(ops.shape(logits)[0] * ops.shape(logits)[1], logits.dtype)
    return ops.sum(ops.exp(log_p) * (log_p - log_q)) / count


@register_method
class PromptSRC(IVLP):
    """PromptSRC (Khattak et al., ICCV 2023): prompts that regulate themselves.

    The prompts and the logits are IVLP's. Training adds three terms to the
    cross-entropy that keep the prompted model close to the frozen CLIP:

    - `text_loss_weight * mean|t - f|`: the L1 distance between the prompted
      class features `t` and the frozen CLIP's features `f` of the class,
      the mean over CLIP's 60 ImageNet templates (`IMAGENET_TEMPLATES`) of
      its unnormalised text features, normalised;
    - `image_loss_weight * mean|i - z|`: between the prompted image features
      `i` and the frozen (unprompted) image tower's `z` of the same images;
    - `KL(softmax(s) || softmax(logits)) / (B * C)`, summed over the batch,
      with `s = logit_scale * z @ f.T` the frozen CLIP's logits.

    All features are normalised; the means run over every element. The terms
    are added (with `add_loss`) when the model is called with
    `training=True` on its own class set, so `fit` trains on the compiled
    cross-entropy plus them; `fit`'s logs and history show each term apart
    (`text_l1`, `image_l1`, `kl`, means over the epoch), and `loss` their sum
    with the cross-entropy. `loss_terms(images, labels)` computes all four.
    Inference is IVLP's. The frozen text features are computed once per
    class set, at the start of `fit`.

    `fit` also adds `GaussianPromptAggregation` (GPA): the model ends
    training with the Gaussian-weighted sum of every epoch's prompts
    (weights `gpa_weights(epochs, gpa_mean, gpa_std)`). Its running sums are
    the model's non-trainable `gpa_sums` (`resume_variables`): a resumed run
    restores them with the weights. They are not part of prompt files.

    Takes RGB images as pixel values 0..255, `[B, S, S, 3]`; returns logits
    `[B, num_classes]`.

    Args:
        clip: a frozen `keras_hub.models.CLIPBackbone` (see `load_clip`).
        classnames: list of class names; underscores become spaces.
        n_ctx: text prompt vectors per block (see `IVLP`).
        ctx_init: words that start the text context (see `IVLP`).
        prompt_depth: text blocks that take prompts (see `IVLP`).
        n_ctx_vision: vision prompt vectors per block (see `IVLP`).
        vision_prompt_depth: vision blocks that take prompts (see `IVLP`).
        text_loss_weight: the weight of the text L1 term (the paper's 25).
        image_loss_weight: the weight of the image L1 term (the paper's 10).
        gpa_mean: GPA's Gaussian mean, in epochs (the paper's 15).
        gpa_std: GPA's Gaussian standard deviation, in epochs (the paper's 1).
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    model = cocoop_tf.PromptSRC(clip, ["cat", "dog"], prompt_depth=2, gpa_mean=2.0)
    model.compile(optimizer=cocoop_tf.paper_optimizer(steps_per_epoch=1, epochs=2, warmup_epochs=0))
    images, labels = np.zeros((2, 32, 32, 3), "float32"), np.array([0, 1])
    history = model.fit(images, labels, epochs=2, verbose=0)
    sorted(history.history)  # ['accuracy', 'image_l1', 'kl', 'loss', 'text_l1']
    terms = model.loss_terms(images, labels)  # cross_entropy, text_l1, image_l1, kl
    ```
    """

    method = "promptsrc"
    display_name = "PromptSRC"
    runs_by_default = False
    # The official base-to-new recipe (vit_b16_c2_ep20_batch4_4+4ctx), IVLP's.
    paper_settings = dict(IVLP.paper_settings)
    run_settings = (*IVLP.run_settings, "text_loss_weight", "image_loss_weight", "gpa_mean", "gpa_std")

    def __init__(
        self, clip, classnames, n_ctx=4, ctx_init="a photo of a", prompt_depth=9, n_ctx_vision=4,
        vision_prompt_depth=None, text_loss_weight=25.0, image_loss_weight=10.0, gpa_mean=15.0, gpa_std=1.0,
        **kwargs,
    ):
        for name, flag, value in (
            ("text_loss_weight", "--text-loss-weight", text_loss_weight),
            ("image_loss_weight", "--image-loss-weight", image_loss_weight),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} ({flag}) must be a finite number >= 0, got {shown(value)}.")
        gpa_weights(1, gpa_mean, gpa_std)  # checks them
        self.text_loss_weight = float(text_loss_weight)
        self.image_loss_weight = float(image_loss_weight)
        self.gpa_mean = float(gpa_mean)
        self.gpa_std = float(gpa_std)
        self._frozen_text_features = None
        super().__init__(
            clip, classnames, n_ctx=n_ctx, ctx_init=ctx_init, prompt_depth=prompt_depth,
            n_ctx_vision=n_ctx_vision, vision_prompt_depth=vision_prompt_depth, **kwargs,
        )
        self.gpa_sums = [
            self.add_weight(
                shape=variable.shape, initializer="zeros", dtype="float32", trainable=False,
                name=f"gpa_sum_{variable.name}",
            )
            for variable in self.prompt_learner.trainable_weights
        ]
        # The terms' means over an epoch, in fit's logs (Keras resets them with its own).
        self.regulariser_trackers = [keras.metrics.Mean(name=name) for name in REGULARISERS]

    @property
    def resume_variables(self):
        return list(self.gpa_sums)

    # --- the frozen CLIP's features ---------------------------------------------------

    def set_classnames(self, classnames, force=False):
        super().set_classnames(classnames, force=force)
        self._frozen_text_features = None

    def frozen_text_features(self):
        """The frozen CLIP's class features `[C, D]`: the mean over the 60 templates, normalised (cached).

        Each class's prompts are the 60 `IMAGENET_TEMPLATES` filled with its
        name; their unnormalised text features are averaged, then the mean is
        normalised, as PromptSRC's trainer does. Only training needs them, so
        a class whose templated name does not fit the context is refused here
        (evaluation on it works as IVLP's).
        """
        if self._frozen_text_features is None:
            # Computed eagerly even while a step is traced, so it becomes a constant.
            with tf.init_scope():
                self._frozen_text_features = self._template_mean_features()
        return self._frozen_text_features

    def _template_mean_features(self):
        texts = [template.format(name) for name in self.classnames for template in IMAGENET_TEMPLATES]
        owners = [name for name in self.classnames for _ in IMAGENET_TEMPLATES]
        try:
            token_ids = tokenize_prompts(texts, owners, self.clip.text_encoder.max_sequence_length)
        except ValueError as error:
            raise ValueError(
                f"PromptSRC trains against the frozen CLIP's features of each class in CLIP's "
                f"{len(IMAGENET_TEMPLATES)} ImageNet templates. {error}"
            ) from None
        no_context = ops.zeros((1, 0, self.clip.text_encoder.embedding_dim), self.compute_dtype)
        features = np.concatenate(
            [
                ops.convert_to_numpy(self.prompt_text_encoder(no_context, token_ids[i : i + TEXT_BATCH_SIZE])[0])
                for i in range(0, len(token_ids), TEXT_BATCH_SIZE)
            ]
        ).astype("float32")
        mean = features.reshape(len(self.classnames), len(IMAGENET_TEMPLATES), -1).mean(axis=1)
        return mean / np.linalg.norm(mean, axis=-1, keepdims=True)

    def load_own_variables(self, store):
        # Loading weights may change the backbone: the frozen features are recomputed.
        super().load_own_variables(store)
        self._frozen_text_features = None

    # --- training --------------------------------------------------------------------

    def _logits_and_regularisers(self, images):
        """The prompted logits `[B, C]` on the model's classes and the three weighted terms."""
        text_features = self.class_features(self.token_ids)
        image_features = self.encode_images(images)
        logits = self.feature_logits(image_features, text_features)
        # The frozen model's side carries no gradient; the terms are computed in float32.
        frozen_images = ops.cast(ops.stop_gradient(self.image_encoder(images)), "float32")
        frozen_text = ops.convert_to_tensor(self.frozen_text_features(), "float32")
        text_features, image_features = ops.cast(text_features, "float32"), ops.cast(image_features, "float32")
        frozen_logits = self.logit_scale("float32") * ops.matmul(frozen_images, ops.transpose(frozen_text))
        terms = {
            "text_l1": self.text_loss_weight * ops.mean(ops.abs(text_features - frozen_text)),
            "image_l1": self.image_loss_weight * ops.mean(ops.abs(image_features - frozen_images)),
            "kl": logits_kl(ops.cast(logits, "float32"), frozen_logits),
        }
        return logits, terms

    def loss_terms(self, images, labels):
        """PromptSRC's training loss on a batch, term by term, each weighted as in training.

        Args:
            images: RGB pixel values 0..255, `[B, S, S, 3]`.
            labels: int class indices `[B]` into the model's classes.

        Returns:
            dict of scalars: `cross_entropy`, `text_l1`, `image_l1` and `kl`;
            their sum is the loss `fit` minimises.
        """
        logits, terms = self._logits_and_regularisers(ops.convert_to_tensor(images))
        cross_entropy = keras.losses.sparse_categorical_crossentropy(
            ops.convert_to_tensor(labels), ops.cast(logits, "float32"), from_logits=True
        )
        return {"cross_entropy": ops.mean(cross_entropy), **terms}

    def call(self, images, token_ids=None, training=None):
        if not training or token_ids is not None:
            return super().call(images, token_ids)
        logits, terms = self._logits_and_regularisers(images)
        # Per replica: under a distribution strategy Keras scales added losses as it scales
        # the compiled loss, and the trackers' means reduce over the replicas as its loss's does.
        batch = ops.shape(images)[0]
        for tracker, name in zip(self.regulariser_trackers, REGULARISERS):
            self.add_loss(terms[name])
            tracker.update_state(terms[name], sample_weight=batch)
        return logits

    def test_step(self, data):
        # Evaluation adds no terms: their trackers stay out of its logs (and fit's val_ logs).
        logs = super().test_step(data)
        return {name: value for name, value in logs.items() if name not in REGULARISERS}

    def fit(self, *args, **kwargs):
        """`CLIPClassifier.fit`, with `GaussianPromptAggregation` first among the callbacks.

        The aggregation takes fit's `epochs` (the total, also when resuming
        with `initial_epoch`) and the model's `gpa_mean` and `gpa_std`;
        callbacks that already hold one keep theirs.
        """
        arguments = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs).arguments
        arguments.pop("self")
        callbacks = arguments.get("callbacks")
        if not isinstance(callbacks, keras.callbacks.CallbackList):  # fit's own, for validation
            callbacks = list(callbacks or [])
            if not any(isinstance(c, GaussianPromptAggregation) for c in callbacks):
                epochs = arguments.get("epochs", 1)
                callbacks.insert(0, GaussianPromptAggregation(epochs, self.gpa_mean, self.gpa_std))
            arguments["callbacks"] = callbacks
        self.frozen_text_features()  # before any replica's step is traced
        return super().fit(**arguments)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "text_loss_weight": self.text_loss_weight,
                "image_loss_weight": self.image_loss_weight,
                "gpa_mean": self.gpa_mean,
                "gpa_std": self.gpa_std,
            }
        )
        return config
