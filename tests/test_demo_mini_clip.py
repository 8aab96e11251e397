"""The shipped mini CLIP, its weight file, and the pretraining script."""

import dataclasses
import importlib.resources
import io
import json
import re

import keras
import numpy as np
import pytest

from cocoop_tf import load_clip
from cocoop_tf.clip.backbone import random_backbone
from cocoop_tf.clip.tokenizer import EOT_TOKEN_ID
from cocoop_tf.clip.tokenizer import SOT_TOKEN_ID
from cocoop_tf.demo import images as demo_images
from cocoop_tf.demo import pretrain
from cocoop_tf.demo import weights
from cocoop_tf.demo.captions import TEMPLATE_EFFECTS
from cocoop_tf.demo.captions import caption_table
from cocoop_tf.demo.captions import used_token_ids
from cocoop_tf.demo.rendering import EFFECTS
from cocoop_tf.demo.rendering import FADED
from cocoop_tf.demo.rendering import GREY_BACKGROUND
from cocoop_tf.demo.rendering import NO_EFFECT

TINY = dataclasses.replace(
    pretrain.MINI_CLIP_ARCHITECTURE, vision_width=32, vision_layers=1, vision_heads=1,
    vision_mlp_width=64, text_width=32, text_layers=1, text_heads=1, text_mlp_width=64,
    projection_dim=16,
)


def _card_accuracy():
    card = (importlib.resources.files("cocoop_tf.demo") / "MINI_CLIP.md").read_text()
    return float(re.search(r"Zero-shot accuracy: \*\*([\d.]+)%\*\*", card).group(1)) / 100


def test_shipped_weights_reach_the_cards_zero_shot_accuracy():
    clip = load_clip("mini_clip")
    assert not any(w.trainable for w in clip.weights)
    assert clip.count_params() == 7_585_042
    accuracy = pretrain.zero_shot_accuracy(clip, *pretrain.held_out_test_images())
    assert accuracy == pytest.approx(_card_accuracy(), abs=0.01)
    # Held-out images are never in the pretraining pool.
    held_out = {demo_images.content_hash(i) for i in demo_images.load_part("pretrain_test").images}
    assert not held_out & {demo_images.content_hash(i) for i in demo_images.load_part("pretrain").images}


def test_weight_file_keeps_only_the_caption_token_rows():
    tensors, metadata = weights.read_compact_clip(weights.mini_clip_path())
    captions = caption_table(demo_images.CLASSNAMES)
    ids = tensors["text_encoder_embedding/token_embedding/embeddings:ids"]
    np.testing.assert_array_equal(ids, used_token_ids(captions))
    assert {SOT_TOKEN_ID, EOT_TOKEN_ID} <= set(ids.tolist()) and len(ids) < 100
    assert json.loads(metadata["architecture"]) == dataclasses.asdict(pretrain.MINI_CLIP_ARCHITECTURE)
    assert weights.mini_clip_path().stat().st_size < 4_000_000
    table = np.asarray(load_clip("mini_clip").text_encoder.embedding.token_embedding.embeddings)
    unused = np.setdiff1d(np.arange(len(table)), ids)
    assert not table[unused].any() and np.abs(table[ids]).min(axis=1).max() > 0


def test_unknown_source_error_names_mini_clip():
    with pytest.raises(ValueError, match="mini_clip"):
        load_clip("mini_clipp")


def test_compact_file_round_trip(tmp_path):
    backbone = random_backbone(TINY, seed=3)
    path = tmp_path / "tiny.safetensors"
    rows = np.array([5, 320, SOT_TOKEN_ID, EOT_TOKEN_ID])
    weights.save_compact_clip(backbone, path, rows, dtype="float32")
    loaded = weights.load_compact_clip(path)
    table = np.asarray(backbone.text_encoder.embedding.token_embedding.embeddings)
    loaded_table = np.asarray(loaded.text_encoder.embedding.token_embedding.embeddings)
    np.testing.assert_array_equal(loaded_table[rows], table[rows])
    assert not np.delete(loaded_table, rows, axis=0).any()
    for original, copy in zip(backbone.weights, loaded.weights):
        if "token_embedding" not in original.path:
            np.testing.assert_array_equal(np.asarray(copy), np.asarray(original), err_msg=original.path)


def test_positives_follow_the_captions():
    pool = demo_images.load_part("pretrain")
    table = caption_table(pool.classnames)
    sampler = pretrain.BatchSampler(pool, table, seed=0)
    images, token_ids, positives = sampler.sample(96)
    assert images.shape == (96, 32, 32, 3) and images.dtype == np.uint8
    assert np.all(np.diag(positives) == 1)
    # Which (template, class, colour mention) each caption is.
    rows = table.reshape(-1, table.shape[-1])
    where = [np.unravel_index(np.flatnonzero((rows == ids).all(axis=1))[0], table.shape[:3]) for ids in token_ids]
    template, label, colour = (np.array(x) for x in zip(*where))
    effect = np.array(TEMPLATE_EFFECTS)[template]
    same_class = label[:, None] == label[None, :]
    assert not positives[~same_class].any()
    # Every caption names its picture's effect, or none: a caption that does not name a
    # colour describes exactly the pictures of its class and effect.
    same_effect = effect[:, None] == effect[None, :]
    np.testing.assert_array_equal(positives[colour == 0], (same_class & same_effect)[colour == 0])
    named = colour > 0
    assert (positives[named] < (same_class & same_effect)[named]).any()
    assert set(effect) == {NO_EFFECT, *range(len(EFFECTS))}
    # Captions tell the truth about their picture: faded ink is dim, a grey background is not black.
    assert images[effect == FADED].max() <= 154 and (effect == FADED).any()
    assert images[effect == GREY_BACKGROUND].min(axis=(1, 2, 3)).min() >= 12


def test_contrastive_loss_matches_its_definition(rng):
    image = rng.normal(size=(6, 8)).astype("float32")
    text = rng.normal(size=(6, 8)).astype("float32")
    positives = np.eye(6, dtype="float32")
    positives[0, 3] = positives[3, 0] = positives[1, 4] = 1
    loss = float(pretrain.contrastive_loss(image, text, positives, np.float32(np.log(10.0))))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    logits = 10.0 * unit(text) @ unit(image).T

    def cross_entropy(logits, targets):
        log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -(targets / targets.sum(axis=1, keepdims=True) * log_softmax).sum(axis=1).mean()

    expected = (cross_entropy(logits, positives) + cross_entropy(logits.T, positives.T)) / 2
    assert loss == pytest.approx(expected, rel=1e-5)


def test_pretraining_runs_end_to_end_and_writes_loadable_weights(tmp_path):
    out = io.StringIO()
    report = pretrain.pretrain(
        tmp_path / "run", steps=3, seed=5, batch_size=16, architecture=TINY, log_every=1, out=out,
    )
    log = out.getvalue()
    assert "step     3/3" in log and "Zero-shot accuracy" in log
    assert (tmp_path / "run" / "pretraining.json").exists()
    loaded = weights.load_compact_clip(tmp_path / "run" / weights.MINI_CLIP_FILE)
    assert loaded.count_params() == report["parameters"]
    assert 0.0 <= report["zero_shot_accuracy"] <= 1.0
    assert report["zero_shot_accuracy_saved_weights"] == pytest.approx(report["zero_shot_accuracy"], abs=0.02)
    # The same seed trains the same weights.
    again = pretrain.pretrain(
        tmp_path / "again", steps=3, seed=5, batch_size=16, architecture=TINY, log_every=1,
        out=io.StringIO(),
    )
    assert again["final_loss"] == report["final_loss"]
    first, _ = weights.read_compact_clip(tmp_path / "run" / weights.MINI_CLIP_FILE)
    second, _ = weights.read_compact_clip(tmp_path / "again" / weights.MINI_CLIP_FILE)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_trainer_text_path_is_the_backbones(rng):
    backbone = random_backbone(TINY, seed=1)
    captions = caption_table(demo_images.CLASSNAMES)
    trainer = pretrain.ContrastiveTrainer(
        backbone, used_token_ids(captions), pretrain.make_optimizer(10, 1e-3)
    )
    token_ids = captions.reshape(-1, captions.shape[-1])[rng.choice(len(captions.reshape(-1, captions.shape[-1])), 12)]
    expected = backbone.get_text_embeddings(keras.ops.convert_to_tensor(token_ids))
    np.testing.assert_allclose(trainer.text_features(token_ids), expected, atol=1e-5)


def test_class_names_the_mini_clip_never_learned_are_refused():
    from cocoop_tf import CoCoOp
    from cocoop_tf import ZeroShotCLIP

    clip = load_clip("mini_clip")
    CoCoOp(clip, list(demo_images.CLASSNAMES))  # its own classes and context words
    with pytest.raises(ValueError, match=r"'american bulldog' has tokens it never learned \('american', 'bulldog'\)"):
        CoCoOp(clip, ["digit one", "american_bulldog"])
    with pytest.raises(ValueError, match=r"class 'bear' has tokens it never learned \(',', 'pet', 'type'\)"):
        ZeroShotCLIP(clip, ["bear"], template="a photo of a {}, a type of pet.")
