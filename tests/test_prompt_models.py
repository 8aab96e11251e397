"""CoCoOp / CoOp as Keras models: fit, frozen backbone, saving, layers, precision, errors."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import cocoop_tf
from cocoop_tf.layers import CLIPImageNormalization
from cocoop_tf.layers import MetaNet
from cocoop_tf.layers import PromptLearner
from cocoop_tf.layers import PromptTextEncoder

NAMES = ["red thing", "green thing", "blue thing", "grey thing"]


@pytest.fixture(scope="module")
def clip():
    return cocoop_tf.load_clip("random_tiny", seed=0)


@pytest.fixture(scope="module")
def colour_task():
    """Four classes of noisy solid-colour 32x32 images, 16 per class."""
    rng = np.random.default_rng(0)
    colours = rng.uniform(0, 255, (4, 1, 1, 3))
    labels = np.repeat(np.arange(4), 16)
    images = np.clip(colours[labels] + rng.normal(0, 25, (64, 32, 32, 3)), 0, 255)
    return images.astype("float32"), labels


def _dataset(images, labels, batch_size=8):
    return tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(64, seed=0).batch(batch_size)


def _fit(model, images, labels, lr, epochs=10):
    model.compile(optimizer=cocoop_tf.paper_optimizer(8, epochs=epochs, lr=lr, warmup_epochs=0))
    return model.fit(_dataset(images, labels), epochs=epochs, verbose=0, shuffle=False)


@pytest.mark.parametrize(
    "build, lr",
    [
        (lambda clip: cocoop_tf.CoCoOp(clip, NAMES, reduction=4), 0.01),
        (lambda clip: cocoop_tf.CoOp(clip, NAMES, n_ctx=8, ctx_init=None), 0.01),
    ],
    ids=["cocoop", "coop"],
)
def test_fit_learns_and_leaves_the_backbone_untouched(clip, colour_task, build, lr):
    images, labels = colour_task
    keras.utils.set_random_seed(1)  # converges for other seeds too; fixed for a stable test
    model = build(clip)
    before = [np.array(w) for w in clip.weights]
    context_before = np.array(model.prompt_learner.ctx)
    history = _fit(model, images, labels, lr)
    assert history.history["accuracy"][-1] >= 0.95
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert not np.array_equal(np.asarray(model.prompt_learner.ctx), context_before)
    for w, old in zip(clip.weights, before):
        np.testing.assert_array_equal(np.asarray(w), old, err_msg=w.path)
    # evaluate and predict through the same model
    loss, accuracy = model.evaluate(_dataset(images, labels), verbose=0)
    assert accuracy >= 0.95
    assert model.predict(images, verbose=0).shape == (64, 4)


def test_set_classnames_keeps_weights_and_changes_classes(clip, rng):
    model = cocoop_tf.CoCoOp(clip, NAMES, reduction=4)
    images = rng.uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    first = model.predict(images, verbose=0)
    weights = [np.array(w) for w in model.trainable_weights]
    model.set_classnames(["sky", "sea", "forest_path"])
    swapped = model.predict(images, verbose=0)
    assert first.shape == (3, 4) and swapped.shape == (3, 3)
    for w, old in zip(model.trainable_weights, weights):
        np.testing.assert_array_equal(np.asarray(w), old)
    fresh = cocoop_tf.CoCoOp(clip, ["sky", "sea", "forest path"], reduction=4)
    for w, old in zip(fresh.trainable_weights, weights):
        w.assign(old)
    np.testing.assert_allclose(swapped, fresh.predict(images, verbose=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [cocoop_tf.CoCoOp, cocoop_tf.CoOp])
def test_classify_takes_any_class_set_as_token_ids(clip, rng, cls):
    model = cls(clip, NAMES)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    other = ["sky", "sea", "forest_path"]
    token_ids = cocoop_tf.tokenize_classnames(other)
    np.testing.assert_array_equal(token_ids, model.tokenize_classnames(other))
    served = np.asarray(model.classify(images, token_ids))
    model.set_classnames(other)
    np.testing.assert_array_equal(served, np.asarray(model(images)))
    # predict runs compiled: rounding of the cosines (float32, ~1e-7) differs, times logit scale 100
    np.testing.assert_allclose(served, model.predict(images, verbose=0), rtol=1e-5, atol=1e-4)


def test_tokenize_classnames_layout_and_room_for_context():
    ids = cocoop_tf.tokenize_classnames(["forest_path"])
    assert ids.shape == (1, 77)
    np.testing.assert_array_equal(ids[0, :5], cocoop_tf.tokenize("forest path.")[0, :5])
    long_name = "word " * 70  # 70 tokens + "." + start/end = 73 positions
    assert cocoop_tf.tokenize_classnames([long_name], n_ctx=4).shape == (1, 77)
    with pytest.raises(ValueError, match="needs 78 positions .*5 context vectors.*context length is 77"):
        cocoop_tf.tokenize_classnames([long_name], n_ctx=5)


@pytest.mark.parametrize("cls", [cocoop_tf.CoCoOp, cocoop_tf.CoOp, cocoop_tf.MaPLe, cocoop_tf.PromptSRC])
def test_keras_file_round_trip_in_a_clean_process(clip, rng, tmp_path, cls):
    deep = {"prompt_depth": 2, "vision_prompt_depth": 1} if cls is cocoop_tf.PromptSRC else {"prompt_depth": 2}
    model = cls(clip, NAMES, **(deep if cls in (cocoop_tf.MaPLe, cocoop_tf.PromptSRC) else {}))
    for variable in model.trainable_variables:
        variable.assign(np.asarray(variable) + rng.normal(0, 0.1, variable.shape).astype("float32"))
    images = rng.uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(
        f"""
        import numpy as np, keras
        import cocoop_tf
        model = keras.models.load_model({str(tmp_path / "model.keras")!r})
        assert type(model).__name__ == {cls.__name__!r}
        np.save({str(tmp_path / "out.npy")!r}, model.predict(np.load({str(tmp_path / "images.npy")!r}), verbose=0))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_heads_sharing_a_backbone_save_it_once_and_load_in_a_clean_process(clip, rng, tmp_path):
    x = keras.Input((32, 32, 3))
    cocoop, coop = cocoop_tf.CoCoOp(clip, NAMES, reduction=4), cocoop_tf.CoOp(clip, ["sky", "sea"])
    outer = keras.Model(x, [cocoop(x), coop(x)])
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    for i, output in enumerate(outer.predict(images, verbose=0)):
        np.save(tmp_path / f"expected{i}.npy", output)
    outer.save(tmp_path / "two_heads.keras")
    cocoop.save(tmp_path / "one_head.keras")
    # The backbone (nearly all of the bytes) is stored once.
    assert os.path.getsize(tmp_path / "two_heads.keras") < 1.1 * os.path.getsize(tmp_path / "one_head.keras")
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import cocoop_tf
        outer = keras.saving.load_model({str(tmp_path / "two_heads.keras")!r})
        heads = [layer for layer in outer.layers if isinstance(layer, cocoop_tf.models.clip_classifier.CLIPClassifier)]
        assert heads[0].clip is heads[1].clip
        outputs = outer.predict(np.load({str(tmp_path / "images.npy")!r}), verbose=0)
        for i, output in enumerate(outputs):
            np.testing.assert_allclose(output, np.load({str(tmp_path)!r} + f"/expected{{i}}.npy"), rtol=1e-5, atol=1e-5)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)

    # Swapping the class set of a head inside the outer model is refused, with the way out.
    with pytest.raises(ValueError, match=r"layer of another Keras model .*make_predict_function\(force=True\)"):
        cocoop.set_classnames(["cat", "dog"])
    cocoop.set_classnames(["cat", "dog"], force=True)
    outer.make_predict_function(force=True)
    assert outer.predict(images, verbose=0)[0].shape == (2, 2)


def test_prompt_checkpoint_applies_to_a_separately_loaded_backbone(clip, rng, tmp_path):
    model = cocoop_tf.CoCoOp(clip, NAMES, reduction=4)
    for variable in model.trainable_variables:
        variable.assign(np.asarray(variable) + rng.normal(0, 0.1, variable.shape).astype("float32"))
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    path = tmp_path / "prompt.safetensors"
    model.save_prompt(path)
    other_clip = cocoop_tf.load_clip("random_tiny", seed=0)  # same weights, new objects
    restored = cocoop_tf.CoCoOp.from_prompt(other_clip, path)  # reduction read from the file
    assert restored.classnames == NAMES
    np.testing.assert_array_equal(restored.predict(images, verbose=0), model.predict(images, verbose=0))
    # into an existing model, with new classes
    target = cocoop_tf.CoCoOp(other_clip, ["sky", "sea"], reduction=4)
    target.load_prompt(path)
    for a, b in zip(target.trainable_weights, model.trainable_weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_prompt_checkpoint_records_its_backbone_and_training(clip, tmp_path):
    from cocoop_tf.models.prompt_file import read_prompt

    model = cocoop_tf.CoCoOp(clip, ["apple_pie", "car side"], reduction=4)
    model.save_prompt(tmp_path / "p.safetensors", training={"dataset": "food101", "seed": 2})
    _, metadata = read_prompt(tmp_path / "p.safetensors")
    assert metadata["classnames"] == ["apple pie", "car side"]  # the cleaned form
    assert metadata["training"] == {"dataset": "food101", "seed": 2}
    assert metadata["backbone"] == model.backbone_fingerprint and len(metadata["backbone"]) == 16
    same = cocoop_tf.CoCoOp.from_prompt(cocoop_tf.load_clip("random_tiny", seed=0), tmp_path / "p.safetensors")
    assert same.backbone_fingerprint == metadata["backbone"]
    other_clip = cocoop_tf.load_clip("random_tiny", seed=1)  # same widths, other weights
    target = cocoop_tf.CoCoOp(other_clip, ["x"], reduction=4)
    before = [np.asarray(v).copy() for v in target.trainable_weights]
    with pytest.raises(ValueError, match="trained on another backbone .*force=True"):
        target.load_prompt(tmp_path / "p.safetensors")
    for old, variable in zip(before, target.trainable_weights):
        np.testing.assert_array_equal(np.asarray(variable), old)  # nothing half-loaded
    with pytest.warns(UserWarning, match="loading it anyway"):
        target.load_prompt(tmp_path / "p.safetensors", force=True)
    for a, b in zip(target.trainable_weights, model.trainable_weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_prompt_checkpoint_size_for_vit_b16(tmp_path):
    clip = cocoop_tf.load_clip("random_vit_b16")
    path = tmp_path / "vit_b16.safetensors"
    cocoop_tf.CoCoOp(clip, ["a", "b"]).save_prompt(path)
    size = os.path.getsize(path)
    assert 35_360 * 4 <= size < 35_360 * 4 + 4_096  # ~140 KB: the learned numbers and a header
    del clip
    keras.backend.clear_session()


def test_prompt_checkpoint_mismatch_is_explained(clip, tmp_path):
    path = tmp_path / "prompt.safetensors"
    cocoop_tf.CoCoOp(clip, NAMES, reduction=4).save_prompt(path)
    wider = cocoop_tf.load_clip("random_vit_b16")
    with pytest.raises(ValueError, match="ctx_dim is 64 but this model's is 512"):
        cocoop_tf.CoCoOp(wider, NAMES).load_prompt(path)
    del wider
    keras.backend.clear_session()
    with pytest.raises(ValueError, match=r"holds a CoCoOp prompt, not a CoOp one: load it with "
                       r"CoCoOp.from_prompt \(on the command line: --method cocoop, or no --method\)"):
        cocoop_tf.CoOp.from_prompt(clip, path)
    with pytest.raises(ValueError, match="meta_net/linear1/.* has shape .*this model needs"):
        cocoop_tf.CoCoOp(clip, NAMES, reduction=2).load_prompt(path)
    from safetensors.numpy import load_file
    from safetensors.numpy import save_file

    from cocoop_tf.models.prompt_file import read_prompt

    for bad in (np.nan, 1e38):
        tensors, metadata = load_file(path), read_prompt(path)[1]
        metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
        tensors["prompt_learner/ctx"][1, 2] = bad
        save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
        with pytest.raises(ValueError, match="prompt_learner/ctx holds NaN, infinite or absurd values"):
            cocoop_tf.CoCoOp(clip, NAMES, reduction=4).load_prompt(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable prompt checkpoint"):
        cocoop_tf.CoCoOp(clip, NAMES).load_prompt(tmp_path / "junk.safetensors")


def test_layers_in_a_users_functional_model(clip, rng, tmp_path):
    """A hand-made CoCoOp head from our layers and the backbone's sub-layers."""
    token_ids = cocoop_tf.tokenize_classnames(NAMES, n_ctx=4)
    images = keras.Input((32, 32, 3))
    x = CLIPImageNormalization(32)(images)
    features = clip.vision_projection(clip.vision_pooler(clip.vision_encoder({"images": x})))
    features = keras.layers.UnitNormalization()(features)
    context = PromptLearner(4, 64)(MetaNet(64, reduction=4)(features))
    text = PromptTextEncoder(clip.text_encoder, clip.text_projection)(context, token_ids)
    text = keras.layers.UnitNormalization()(text)
    logits = keras.ops.einsum("bd,bcd->bc", features, text) * 100.0
    model = keras.Model(images, logits)
    data = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = model.predict(data, verbose=0)
    assert expected.shape == (2, 4)
    owners = sorted(v.path.split("/")[0].rstrip("_0123456789") for v in model.trainable_weights)
    assert owners == ["meta_net"] * 4 + ["prompt_learner"]  # the backbone stays frozen
    model.save(tmp_path / "functional.keras")
    loaded = keras.models.load_model(tmp_path / "functional.keras")
    np.testing.assert_allclose(loaded.predict(data, verbose=0), expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    "layer",
    [
        MetaNet(48, reduction=8),
        PromptLearner(5, 48, num_classes=3),
        CLIPImageNormalization(224),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layers_serialise(layer):
    config = keras.layers.serialize(layer)
    restored = keras.layers.deserialize(config)
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "policy, method",
    [("mixed_bfloat16", "cocoop"), ("mixed_float16", "cocoop"), ("mixed_bfloat16", "promptsrc"),
     ("mixed_float16", "promptsrc")],
)
def test_mixed_precision_trains_without_nan(colour_task, policy, method):
    images, labels = colour_task
    keras.mixed_precision.set_global_policy(policy)
    try:
        clip = cocoop_tf.load_clip("random_tiny")
        if method == "cocoop":
            model = cocoop_tf.CoCoOp(clip, NAMES, reduction=4)
        else:  # its terms against the frozen CLIP, and the aggregation over both epochs
            model = cocoop_tf.PromptSRC(clip, NAMES, prompt_depth=2, gpa_mean=1.5)
        history = _fit(model, images[::4], labels[::4], lr=0.02, epochs=2)
        assert np.all(np.isfinite(history.history["loss"]))
        if method == "promptsrc":
            for term in ("text_l1", "image_l1", "kl"):
                assert np.all(np.isfinite(history.history[term])) and history.history[term][0] > 0, term
            assert all(v.dtype == "float32" and np.all(np.isfinite(np.asarray(v))) for v in model.resume_variables)
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.prompt_learner.ctx.dtype == "float32"  # master weights stay float32
        assert all(np.all(np.isfinite(np.asarray(v))) for v in model.trainable_weights)
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --- bad input ---------------------------------------------------------------


def test_wrong_image_size(clip):
    model = cocoop_tf.CoCoOp(clip, NAMES)
    with pytest.raises(ValueError, match="32x32 pixels"):
        model(np.zeros((1, 224, 224, 3), "float32"))


def test_class_name_that_does_not_fit_is_named(clip):
    with pytest.raises(ValueError, match="class name 'ultra .*does not fit"):
        cocoop_tf.CoOp(clip, ["cat", "ultra " * 75 + "cat"])


def test_empty_class_list(clip):
    with pytest.raises(ValueError, match="class list is empty"):
        cocoop_tf.CoCoOp(clip, [])


@pytest.mark.parametrize(
    "mode, problem",
    [("eager", "pixel"), ("graph", "pixel"), ("xla", "pixel"), ("xla", "label"), ("graph", "loss")],
)
def test_a_bad_batch_stops_training_before_it_changes_a_weight(clip, colour_task, mode, problem):
    images, labels = colour_task
    images, labels = images[:16].copy(), labels[:16].copy()
    lr = 0.01
    if problem == "pixel":
        images[9, 3, 3, 1] = np.nan  # in the third batch of four
    elif problem == "label":
        labels[9] = 4  # of 4 classes: XLA drops graph assertions, this check stays
    else:
        lr = 1e30  # the first step sends the context far away; the next loss is not finite
    model = cocoop_tf.CoCoOp(clip, NAMES, reduction=4)
    model.compile(optimizer=cocoop_tf.paper_optimizer(4, epochs=1, lr=lr, warmup_epochs=0),
                  run_eagerly=mode == "eager", jit_compile=mode == "xla")
    start = [np.asarray(v).copy() for v in model.trainable_variables]
    before = {}

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            before[batch] = [np.asarray(v).copy() for v in model.trainable_variables]

    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    expected = {"pixel": (ValueError, r"Batch 3 of epoch 1: 1 image value\(s\) are NaN or infinite"),
                "label": (ValueError, r"Batch 3 of epoch 1: 1 label\(s\) are outside \[0, 4\)"),
                "loss": (FloatingPointError, r"Batch 2 of epoch 1: the loss is nan")}[problem]
    with pytest.raises(expected[0], match=expected[1] + r".*the weights are those before this batch"):
        model.fit(data, epochs=1, verbose=0, callbacks=[Record()])
    last = max(before)
    assert last == {"pixel": 2, "label": 2, "loss": 1}[problem]
    for value, variable in zip(before[last], model.trainable_variables):
        np.testing.assert_array_equal(np.asarray(variable), value)
    assert all(np.isfinite(np.asarray(v)).all() for v in model.trainable_variables)
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(start, model.trainable_variables))


def test_non_finite_pixels_are_refused_at_inference(clip, colour_task):
    images, labels = colour_task
    model = cocoop_tf.CoCoOp(clip, NAMES, reduction=4)
    model.compile(jit_compile=True)
    bad = images[:6].copy()
    bad[4, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"1 image\(s\) are not finite \(the first: image 4\)"):
        model.predict(bad, verbose=0)
    with pytest.raises(ValueError, match="NaN or infinite pixel values"):
        model(bad)
    with pytest.raises(ValueError, match=r"Evaluation batch 1: 1 image value\(s\) are NaN"):
        model.evaluate(bad, labels[:6], verbose=0)
    assert model.evaluate(images[:6], labels[:6], verbose=0, return_dict=True).keys() == {"loss", "accuracy"}


def test_ctx_init_and_n_ctx_disagree(clip):
    with pytest.raises(ValueError, match="has 3 words but n_ctx=4"):
        cocoop_tf.CoCoOp(clip, NAMES, n_ctx=4, ctx_init="a photo of")


def test_class_specific_context_cannot_change_class_count(clip):
    model = cocoop_tf.CoOp(clip, NAMES, class_specific=True)
    with pytest.raises(ValueError, match="one context per class for 4 classes"):
        model.set_classnames(["a", "b"])


def test_class_list_checks_are_linear():
    from cocoop_tf.clip.prompts import clean_classnames

    names = [f"class_{i}" for i in range(200_000)]  # a quadratic check would take hours
    assert clean_classnames(names)[-1] == "class 199999"
    with pytest.raises(ValueError, match=r"Duplicate class names: \['class 7'\]"):
        clean_classnames([*names, "class 7"])


@pytest.mark.parametrize(
    "build",
    [
        lambda clip, names: cocoop_tf.CoOp(clip, names),
        lambda clip, names: cocoop_tf.CoOp(clip, names, class_specific=True),
        lambda clip, names: cocoop_tf.CoCoOp(clip, names, reduction=4),
        lambda clip, names: cocoop_tf.KgCoOp(clip, names),
        lambda clip, names: cocoop_tf.MaPLe(clip, names, prompt_depth=2),
        lambda clip, names: cocoop_tf.IVLP(clip, names, prompt_depth=2),
        lambda clip, names: cocoop_tf.PromptSRC(clip, names, n_ctx=2, prompt_depth=2),
    ],
    ids=["coop", "coop_csc", "cocoop", "kgcoop", "maple", "ivlp", "promptsrc"],
)
def test_class_names_the_tokenizer_cannot_tell_apart_are_refused(clip, build):
    message = "class names 'Great Pyrenees' and 'great  pyrenees' are the same text to CLIP's tokenizer"
    with pytest.raises(ValueError, match=message):
        build(clip, ["beagle", "Great_Pyrenees", "great  pyrenees", "boxer"])
    model = build(clip, ["beagle", "Great_Pyrenees", "great pyrenees dog", "boxer"])
    with pytest.raises(ValueError, match="'T-shirt' and 't - shirt' are the same text"):
        model.set_classnames(["T-shirt", "t - shirt", "dress", "coat"])
    assert model.classnames == ["beagle", "Great Pyrenees", "great pyrenees dog", "boxer"]
    with pytest.raises(ValueError, match="'Cat' and 'cat' are the same text"):
        model.tokenize_classnames(["Cat", "cat", "dog", "fox"])


def test_train_command_refuses_class_folders_the_tokenizer_cannot_tell_apart(tmp_path, capsys):
    from test_data_helpers import write_class_folders

    from cocoop_tf.cli import main

    write_class_folders(tmp_path / "images", {"Cat": 2, "cat": 2, "dog": 2})
    code = main(["train", "--dataset", str(tmp_path / "images"), "--backbone", "random_tiny",
                 "--shots", "1", "--epochs", "1", "--warmup-epochs", "0", "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1, error
    assert "train: error: The class names 'Cat' and 'cat' are the same text to CLIP's tokenizer" in error
    assert "could never predict 'cat'" in error


@pytest.mark.parametrize(
    "build",
    [
        lambda clip: cocoop_tf.CoOp(clip, NAMES),
        lambda clip: cocoop_tf.CoCoOp(clip, NAMES, reduction=4),
        lambda clip: cocoop_tf.MaPLe(clip, NAMES, prompt_depth=2),
        lambda clip: cocoop_tf.PromptSRC(clip, NAMES, prompt_depth=2, vision_prompt_depth=1),
    ],
    ids=["coop", "cocoop", "maple", "promptsrc"],
)
def test_no_images_give_no_rows(clip, build):
    model = build(clip)
    none = np.zeros((0, 32, 32, 3), "float32")
    ids = model.tokenize_classnames(["sky", "sea", "sand"])
    assert np.asarray(model(none)).shape == (0, 4)
    assert np.asarray(model.classify(none, ids)).shape == (0, 3)
    assert np.asarray(model.encode_images(none)).shape == (0, 32)
    assert model.predict(none, verbose=0).shape == (0, 4)
    if isinstance(model, cocoop_tf.CoCoOp):
        # In a graph whose batch size is only known at run time, as an export traces it.
        logits = tf.function(model.classify, input_signature=[
            tf.TensorSpec((None, 32, 32, 3), tf.float32), tf.TensorSpec((None, None), tf.int32)])
        assert logits(none, ids).shape == (0, 3)
        images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        np.testing.assert_allclose(logits(images, ids), model.classify(images, ids), rtol=1e-4, atol=1e-4)
