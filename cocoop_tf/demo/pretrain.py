"""Contrastive pretraining of the small demo CLIP on digits and animal silhouettes.

    python -m cocoop_tf.demo.pretrain --output DIR [--steps N] [--seed S]

Trains a CLIP of the project's architecture (a keras-hub `CLIPBackbone` with
the real 49 408-token BPE vocabulary and tokenizer) from random weights with
CLIP's objective: symmetric cross-entropy over the image-text similarities of
a batch, scaled by CLIP's temperature (raised to its cap of 100, see
`FINAL_LOGIT_SCALE`). Images come from the pretraining pool of
`cocoop_tf.demo.images` (never from the held-out pool), drawn in a random
ink colour on black, half of them with one photographic effect (see
`rendering.py`), each with a caption from varied templates that names its
class and effect, and some of the time its colour (see `captions.py`). At
the end the zero-shot accuracy with "a photo of a {}." on held-out images of
the same distribution (without effects) is printed, and the weights are written as
`DIR/mini_clip.safetensors` (see `cocoop_tf.demo.weights`) with a JSON
report beside them.
"""

import argparse
import json
import math
import os
import random
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from cocoop_tf.clip.backbone import CLIPArchitecture
from cocoop_tf.clip.backbone import random_backbone
from cocoop_tf.demo import images as demo_images
from cocoop_tf.demo.captions import CAPTION_TEMPLATES
from cocoop_tf.demo.captions import TEMPLATE_EFFECTS
from cocoop_tf.demo.captions import ZERO_SHOT_TEMPLATE
from cocoop_tf.demo.captions import caption_table
from cocoop_tf.demo.captions import used_token_ids
from cocoop_tf.demo.rendering import EFFECTS
from cocoop_tf.demo.rendering import IMAGE_SIZE
from cocoop_tf.demo.rendering import NO_EFFECT
from cocoop_tf.demo.rendering import random_crops
from cocoop_tf.demo.rendering import random_styles
from cocoop_tf.demo.rendering import render
from cocoop_tf.demo.rendering import render_plain
from cocoop_tf.demo.weights import MINI_CLIP_FILE
from cocoop_tf.demo.weights import load_compact_clip
from cocoop_tf.demo.weights import save_compact_clip
from cocoop_tf.layers.image_normalization import CLIPImageNormalization
from cocoop_tf.models.zero_shot_clip import ZeroShotCLIP

# The shipped model: a ViT with 8 x 8 patches on 32 x 32 images (4 blocks of
# width 128) and a 3-block text transformer of width 128 (a single block
# reads captions as a bag of words, which leaves a learned prompt little to
# steer); 2 attention heads of width 64 in both, as OpenAI's models have.
MINI_CLIP_ARCHITECTURE = CLIPArchitecture(
    image_size=IMAGE_SIZE, patch_size=8, vision_width=128, vision_layers=4,
    vision_heads=2, vision_mlp_width=512, vocabulary_size=49408,
    context_length=77, text_width=128, text_layers=3, text_heads=2,
    text_mlp_width=256, projection_dim=128,
)
DEFAULT_STEPS = 1800
DEFAULT_BATCH_SIZE = 128
DEFAULT_LEARNING_RATE = 2e-3
WEIGHT_DECAY = 0.1
WARMUP_FRACTION = 0.05
# CLIP starts its logit scale at 1 / 0.07 and learns it up to its cap, 100,
# which the trained OpenAI models reach. Learned here, it settles far lower
# (about 17), and prompt learning's recipe (SGD at lr 0.002) then barely
# moves a prompt: the scale multiplies every gradient. So the scale is not
# learned: it rises from CLIP's start to CLIP's cap over the first
# `LOGIT_SCALE_RAMP` of the steps (geometrically) and stays there.
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
FINAL_LOGIT_SCALE = math.log(100.0)
LOGIT_SCALE_RAMP = 0.25
REPORT_FILE = "pretraining.json"
# How often a caption names the ink colour of its image.
COLOUR_MENTION_PROBABILITY = 0.5
# How often a picture is drawn with one of `rendering.EFFECTS` (each equally
# likely). Its caption always names the effect, and a plain caption only
# describes pictures without one: "a photo of a cat." is a clean picture. So
# the words before the class name carry what the picture looks like, and
# matter to the text encoder.
EFFECT_PROBABILITY = 0.5
# How often a pretraining picture is a random resized crop (area 25-100%),
# mirrored or not: prompt learning trains on such crops (the paper's
# augmentation), and a CLIP that never saw any misreads them.
CROP_PROBABILITY = 0.5
# Styles of the held-out evaluation images: fixed, whatever the training seed.
EVALUATION_STYLE_SEED = 20220321


def contrastive_loss(image_features, text_features, positives, logit_scale):
    """CLIP's symmetric cross-entropy, with every correct caption-image pair a positive.

    A batch drawn from 20 classes holds each class several times, so the
    caption of one image often describes other images of the batch too
    ("a photo of a cat." fits every cat; "a photo of a red cat." every red
    one). CLIP's
    one-hot targets would push those correct pairs apart as negatives; here
    each caption's target spreads evenly over the images it describes, and
    each image's over the captions that describe it. The images a caption
    does not describe, of other classes or styles, stay negatives.

    Args:
        image_features: `[B, D]` image embeddings (not normalised).
        text_features: `[B, D]` caption embeddings (not normalised).
        positives: `[B, B]`, 1 where caption `i` describes image `j`; the
            diagonal (each image's own caption) must be 1.
        logit_scale: the log of the similarity scale.

    Returns:
        The scalar loss.
    """
    image_features = tf.math.l2_normalize(image_features, axis=-1)
    text_features = tf.math.l2_normalize(text_features, axis=-1)
    logits = tf.exp(logit_scale) * tf.matmul(text_features, image_features, transpose_b=True)
    positives = tf.cast(positives, logits.dtype)
    text_targets = positives / tf.reduce_sum(positives, axis=1, keepdims=True)
    image_targets = tf.transpose(positives) / tf.reduce_sum(positives, axis=0)[:, None]
    text_to_image = tf.nn.softmax_cross_entropy_with_logits(text_targets, logits)
    image_to_text = tf.nn.softmax_cross_entropy_with_logits(image_targets, tf.transpose(logits))
    return (tf.reduce_mean(text_to_image) + tf.reduce_mean(image_to_text)) / 2


class BatchSampler:
    """Class-balanced batches of pretraining images with one caption each.

    Each image's class is drawn uniformly (digits have fewer images than
    animals), then an image of that class, an ink colour and position
    (`random_styles`), an effect (with probability `EFFECT_PROBABILITY`),
    whether to crop and mirror it (`random_crops`, with probability
    `CROP_PROBABILITY`), a caption template (among those of its effect, or
    the plain ones if it has none), and whether the caption names the colour
    (with probability `COLOUR_MENTION_PROBABILITY`).

    Args:
        source: the `SourceImages` to draw from.
        captions: the token table from `caption_table`.
        seed: seed of the NumPy generator.
    """

    def __init__(self, source, captions, seed):
        self.source = source
        self.captions = captions
        self.rng = np.random.default_rng(seed)
        self.members = [
            np.flatnonzero(source.labels == label) for label in range(len(source.classnames))
        ]
        template_effects = np.asarray(TEMPLATE_EFFECTS)
        if len(template_effects) != len(captions):
            raise ValueError("The caption table must hold `CAPTION_TEMPLATES`, in order.")
        # Templates by the effect they name; the plain ones last (index NO_EFFECT).
        self.templates_of = [np.flatnonzero(template_effects == e) for e in (*range(len(EFFECTS)), NO_EFFECT)]

    def sample(self, batch_size):
        """One batch.

        Returns:
            uint8 images `[B, 32, 32, 3]`, int32 caption token ids `[B, L]`,
            and float32 `positives[i, j]`: whether caption `i` describes
            image `j` (same class, the same colour if the caption names one,
            and the same effect, or none).
        """
        rng = self.rng
        labels = rng.integers(0, len(self.members), size=batch_size)
        chosen = np.array([rng.choice(self.members[label]) for label in labels])
        styles = random_styles(batch_size, rng)
        effects = np.where(
            rng.random(batch_size) < EFFECT_PROBABILITY,
            rng.integers(0, len(EFFECTS), batch_size),
            NO_EFFECT,
        )
        images = render(self.source.images[chosen], styles, effects, rng)
        cropped = rng.random(batch_size) < CROP_PROBABILITY
        images[cropped] = random_crops(images[cropped], rng)
        templates = np.array([rng.choice(self.templates_of[effect]) for effect in effects])
        named = rng.random(batch_size) < COLOUR_MENTION_PROBABILITY
        token_ids = self.captions[templates, labels, np.where(named, styles.colour + 1, 0)]
        same_colour = styles.colour[:, None] == styles.colour[None, :]
        same_effect = effects[:, None] == effects[None, :]
        positives = (labels[:, None] == labels[None, :]) & (~named[:, None] | same_colour) & same_effect
        return images, token_ids, positives.astype(np.float32)


class ContrastiveTrainer:
    """One compiled contrastive training step for a CLIP backbone.

    Only the token-embedding rows that captions use can train (no other row
    ever gets a gradient), so the step trains a compact copy of those rows
    instead of the whole 49 408-row table: Adam then updates about 1.7 M
    numbers per step instead of 8 M. `write_token_embedding` copies the
    rows back into the backbone. The text path is keras-hub's
    (`get_text_embeddings`) with the lookup done in the compact table.

    Args:
        backbone: a keras-hub `CLIPBackbone`, trainable.
        token_ids: the vocabulary ids whose rows train (`used_token_ids`).
        optimizer: a Keras optimizer.
    """

    def __init__(self, backbone, token_ids, optimizer):
        self.backbone = backbone
        self.token_ids = np.asarray(token_ids, np.int32)
        embedding = backbone.text_encoder.embedding.token_embedding.embeddings
        self.full_table = embedding
        self.rows = keras.Variable(np.asarray(embedding)[self.token_ids], name="caption_token_embeddings")
        # Ids that no caption uses (the padding after an end token) read row 0:
        # nothing after the end token reaches its feature in a causal model.
        compact = np.zeros(embedding.shape[0], np.int32)
        compact[self.token_ids] = np.arange(len(self.token_ids))
        self.compact_index = tf.constant(compact)
        self.normalization = CLIPImageNormalization(backbone.vision_encoder.image_shape[0])
        fixed = {embedding.path, backbone.clip_head.logit_scale.path}
        self.variables = [v for v in backbone.trainable_variables if v.path not in fixed]
        self.variables.append(self.rows)
        self.optimizer = optimizer
        optimizer.build(self.variables)
        # XLA compiles the whole step: about twice as fast as the graph on CPU.
        self.train_step = tf.function(self._train_step, jit_compile=True)

    def text_features(self, token_ids):
        """Caption embeddings `[B, projection_dim]`, as `get_text_embeddings` computes them."""
        text = self.backbone.text_encoder
        length = token_ids.shape[1]
        x = tf.gather(self.rows.value, tf.gather(self.compact_index, token_ids))
        x = x + text.embedding.position_embedding.position_embeddings.value[:length]
        for block in text.encoder_layers:
            x = block(x)  # causal self-attention
        x = text.layer_norm(x)
        x = tf.gather(x, tf.argmax(token_ids, axis=-1), batch_dims=1)  # end token
        return self.backbone.text_projection(x)

    def _train_step(self, images, token_ids, positives, logit_scale):
        with tf.GradientTape() as tape:
            image_features = self.backbone.get_vision_embeddings(self.normalization(images))
            text_features = self.text_features(token_ids)
            loss = contrastive_loss(image_features, text_features, positives, logit_scale)
        gradients = tape.gradient(loss, [v.value for v in self.variables])
        self.optimizer.apply_gradients(zip(gradients, self.variables))
        return loss

    def write_token_embedding(self):
        """Copies the trained rows into the backbone's token embedding."""
        table = keras.ops.convert_to_numpy(self.full_table)
        table[self.token_ids] = np.asarray(self.rows)
        self.full_table.assign(table)


def logit_scale_at(step, steps):
    """The (log) logit scale of a step: CLIP's start to CLIP's cap, then constant."""
    ramp = max(1, round(LOGIT_SCALE_RAMP * steps))
    progress = min(1.0, step / ramp)
    return INITIAL_LOGIT_SCALE + progress * (FINAL_LOGIT_SCALE - INITIAL_LOGIT_SCALE)


def learning_rate_schedule(steps, learning_rate):
    """Linear warm-up over the first 5% of the steps, then cosine decay to zero."""
    warmup = max(1, int(WARMUP_FRACTION * steps))
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(1, steps - warmup), warmup_target=learning_rate, warmup_steps=warmup
    )


def make_optimizer(steps, learning_rate):
    """AdamW with CLIP's betas and epsilon; no decay of gains, biases, embeddings, scale."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(steps, learning_rate),
        weight_decay=WEIGHT_DECAY,
        beta_1=0.9,
        beta_2=0.98,
        epsilon=1e-6,
    )
    optimizer.exclude_from_weight_decay(
        var_names=["gamma", "beta", "bias", "embeddings", "class_embedding"]
    )
    return optimizer


def seed_everything(seed):
    """Seeds Python, NumPy and TensorFlow (Keras' global generators).

    The training step is compiled whole by XLA, whose CPU kernels are
    deterministic, and batches come from a seeded NumPy generator, so a run
    repeats exactly; TensorFlow's process-wide op determinism is left alone.
    """
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def held_out_test_images(plain=False):
    """Held-out images of the pretraining distribution, for zero-shot accuracy.

    The `"pretrain_test"` part of the partition (50 images per class, never
    trained on), drawn in random styles from a fixed seed, or plainly
    (white, large, sharp, centred).

    Args:
        plain: draw them plainly instead of in random styles.

    Returns:
        `(images, labels, classnames)`: uint8 `[1000, 32, 32, 3]`, int32 `[1000]`,
        and the 20 class names.
    """
    source = demo_images.load_part("pretrain_test")
    if plain:
        images = render_plain(source.images)
    else:
        styles = random_styles(len(source), np.random.default_rng(EVALUATION_STYLE_SEED))
        images = render(source.images, styles)
    return images, source.labels, list(source.classnames)


def zero_shot_accuracy(backbone, images, labels, classnames, template=ZERO_SHOT_TEMPLATE, batch_size=500):
    """Zero-shot accuracy of a backbone.

    Args:
        backbone: a keras-hub `CLIPBackbone`.
        images: uint8 `[N, S, S, 3]` RGB images.
        labels: int `[N]` their classes.
        classnames: class names in label order.
        template: the prompt template.
        batch_size: images per forward pass.

    Returns:
        The fraction of images whose class is predicted.
    """
    model = ZeroShotCLIP(backbone, list(classnames), template=template)
    predictions = np.concatenate([
        np.argmax(np.asarray(model(images[i : i + batch_size])), axis=-1)
        for i in range(0, len(images), batch_size)
    ])
    return float(np.mean(predictions == np.asarray(labels)))


def pretrain(
    output_dir,
    steps=DEFAULT_STEPS,
    seed=0,
    *,
    batch_size=DEFAULT_BATCH_SIZE,
    learning_rate=DEFAULT_LEARNING_RATE,
    architecture=MINI_CLIP_ARCHITECTURE,
    log_every=100,
    out=sys.stdout,
):
    """Pretrains a small CLIP and writes its weights and a report to `output_dir`.

    Args:
        output_dir: folder for `mini_clip.safetensors` and `pretraining.json`.
        steps: optimiser steps.
        seed: seed of the weights, batches and captions.
        batch_size: image-caption pairs per step.
        learning_rate: peak AdamW learning rate.
        architecture: the `CLIPArchitecture` to train (32 x 32 images).
        log_every: print progress every this many steps.
        out: where progress goes.

    Returns:
        The report (a dict), also written as `pretraining.json`.
    """
    if architecture.image_size != IMAGE_SIZE:
        raise ValueError(f"The demo images are {IMAGE_SIZE} x {IMAGE_SIZE}; got {architecture.image_size}.")
    start = time.perf_counter()
    seed_everything(seed)
    pool = demo_images.load_part("pretrain")
    captions = caption_table(pool.classnames, CAPTION_TEMPLATES, architecture.context_length)
    sampler = BatchSampler(pool, captions, seed)

    backbone = random_backbone(architecture, seed=seed)
    used = used_token_ids(captions)
    trainer = ContrastiveTrainer(backbone, used, make_optimizer(steps, learning_rate))

    print(
        f"Pretraining a CLIP of {backbone.count_params():,} parameters on "
        f"{len(pool)} images, {steps} steps of batch {batch_size}, seed {seed}.",
        file=out, flush=True,
    )
    losses = []
    for step in range(1, steps + 1):
        scale = tf.constant(logit_scale_at(step, steps), tf.float32)
        loss = float(trainer.train_step(*sampler.sample(batch_size), scale))
        losses.append(loss)
        if step % log_every == 0 or step == steps:
            recent = np.mean(losses[-log_every:])
            print(
                f"step {step:5d}/{steps}  loss {recent:.4f}  "
                f"scale {math.exp(float(scale)):.1f}  "
                f"elapsed {time.perf_counter() - start:.0f}s",
                file=out, flush=True,
            )
    trainer.write_token_embedding()
    backbone.clip_head.logit_scale.assign(FINAL_LOGIT_SCALE)
    training_seconds = time.perf_counter() - start

    os.makedirs(output_dir, exist_ok=True)
    weights_path = os.path.join(output_dir, MINI_CLIP_FILE)
    save_compact_clip(
        backbone, weights_path, used,
        metadata={"steps": str(steps), "batch_size": str(batch_size), "seed": str(seed)},
    )
    test_set = held_out_test_images()
    report = {
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "learning_rate": learning_rate,
        "parameters": backbone.count_params(),
        "stored_token_rows": int(len(used)),
        "training_seconds": round(training_seconds, 1),
        "final_loss": float(np.mean(losses[-log_every:])),
        "zero_shot_template": ZERO_SHOT_TEMPLATE,
        "zero_shot_images": len(test_set[1]),
        "zero_shot_accuracy": zero_shot_accuracy(backbone, *test_set),
        "zero_shot_accuracy_saved_weights": zero_shot_accuracy(load_compact_clip(weights_path), *test_set),
        "zero_shot_accuracy_plain_images": zero_shot_accuracy(backbone, *held_out_test_images(plain=True)),
        "weights_file_bytes": os.path.getsize(weights_path),
    }
    with open(os.path.join(output_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    print(
        f"Trained in {training_seconds:.0f}s. Zero-shot accuracy ({ZERO_SHOT_TEMPLATE!r}) on "
        f"{report['zero_shot_images']} held-out images: {100 * report['zero_shot_accuracy']:.1f}% "
        f"({100 * report['zero_shot_accuracy_saved_weights']:.1f}% with the saved float16 "
        f"weights). Weights: {weights_path} ({report['weights_file_bytes'] / 1e6:.1f} MB).",
        file=out, flush=True,
    )
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m cocoop_tf.demo.pretrain",
        description="Pretrain the small demo CLIP on MNIST digits and Animal-MNIST silhouettes.",
    )
    parser.add_argument("--output", required=True, help="folder for the weights and report")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimiser steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and batches")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="pairs per step")
    args = parser.parse_args(argv)
    pretrain(args.output, args.steps, args.seed, batch_size=args.batch_size)


if __name__ == "__main__":
    main()
