"""Our models inside a user's functional Keras graph, and what users do around them."""

import keras
import numpy as np
import pytest

import cocoop_tf

NAMES = ["Abyssinian", "american_bulldog", "great-pyrenees"]


@pytest.fixture(scope="module")
def clip():
    return cocoop_tf.load_clip("random_tiny")


@pytest.mark.parametrize("method", [cocoop_tf.CoOp, cocoop_tf.CoCoOp])
def test_class_set_as_an_input_of_a_functional_model(clip, method):
    """Token ids `[B, C, L]` (every row the class set) are an input; one graph serves any class set."""
    model = method(clip, NAMES)
    images = keras.Input((32, 32, 3))
    class_ids = keras.Input((None, 77), dtype="int32")
    graph = keras.Model([images, class_ids], model(images, token_ids=class_ids[0]))
    assert len(graph.trainable_weights) == len(model.trainable_weights) > 0  # nothing became a constant
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    for names in (["sphynx", "pug"], ["bengal", "beagle", "boxer", "chihuahua", "havanese"]):
        ids = model.tokenize_classnames(names)
        logits = graph.predict([pixels, np.broadcast_to(ids, (4, *ids.shape))], batch_size=2, verbose=0)
        np.testing.assert_allclose(logits, model.classify(pixels, ids), rtol=1e-4, atol=1e-4)
    # and it trains: the learned context moves
    ids = np.broadcast_to(model.tokenize_classnames(NAMES), (4, 3, 77))
    before = np.asarray(model.prompt_learner.ctx).copy()
    graph.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    graph.fit([pixels, ids], np.array([0, 1, 2, 0]), batch_size=2, verbose=0)
    assert not np.allclose(np.asarray(model.prompt_learner.ctx), before)


def test_mixed_precision_set_after_the_backbone_is_a_clear_error(clip):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        with pytest.raises(ValueError, match=r"loaded before the policy was set\. Load it after"):
            cocoop_tf.CoCoOp(clip, NAMES)
        half = cocoop_tf.load_clip("random_tiny")
        model = cocoop_tf.CoCoOp(half, NAMES)
        assert model.dtype_policy.name == model.meta_net.dtype_policy.name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert cocoop_tf.CoCoOp(half, NAMES).prompt_learner.compute_dtype == "bfloat16"  # follows its backbone


def test_a_reloaded_keras_model_evaluates_and_fits_without_compile(clip, tmp_path):
    model = cocoop_tf.CoCoOp(clip, NAMES, reduction=4)
    model.compile(optimizer=cocoop_tf.paper_optimizer(steps_per_epoch=2, epochs=2, warmup_epochs=0))
    pixels = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1, 2, 0])
    model.fit(pixels, labels, batch_size=2, verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    expected = model.evaluate(pixels, labels, verbose=0, return_dict=True)
    assert restored.evaluate(pixels, labels, verbose=0, return_dict=True) == pytest.approx(expected)
    restored.fit(pixels, labels, batch_size=2, shuffle=False, verbose=0)
    model.fit(pixels, labels, batch_size=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(np.asarray(restored.prompt_learner.ctx), np.asarray(model.prompt_learner.ctx),
                               rtol=1e-5, atol=1e-6)  # the optimizer state came back too


def test_a_graph_of_our_layers_on_one_backbone_saves_and_loads(clip, tmp_path):
    """CLIPImageEncoder and PromptTextEncoder share the backbone's towers; the file holds them once."""
    from cocoop_tf.layers import CLIPImageEncoder
    from cocoop_tf.layers import MetaNet
    from cocoop_tf.layers import PromptLearner
    from cocoop_tf.layers import PromptTextEncoder

    width = clip.text_encoder.embedding_dim
    images = keras.Input((32, 32, 3))
    class_ids = keras.Input((None, 77), dtype="int32")
    features = CLIPImageEncoder(clip.vision_encoder, clip.vision_pooler, clip.vision_projection)(images)
    context = PromptLearner(4, width)(MetaNet(width, reduction=4)(features))
    text = keras.layers.UnitNormalization()(PromptTextEncoder(clip.text_encoder, clip.text_projection)(context, class_ids[0]))
    graph = keras.Model([images, class_ids], keras.ops.einsum("bd,bcd->bc", features, text))
    pixels = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    ids = np.broadcast_to(cocoop_tf.tokenize_classnames(NAMES), (2, 3, 77))
    graph.save(tmp_path / "graph.keras")
    restored = keras.saving.load_model(tmp_path / "graph.keras")
    np.testing.assert_array_equal(restored.predict([pixels, ids], verbose=0), graph.predict([pixels, ids], verbose=0))
