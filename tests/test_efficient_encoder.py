"""The efficient prompt text encoder gives the full-length reference's results."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import max_relative_difference

import cocoop_tf
from cocoop_tf.clip.backbone import CLIPArchitecture
from cocoop_tf.clip.backbone import random_backbone

TOLERANCE = 1e-5
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron".split()


@pytest.fixture(scope="module")
def clip():
    architecture = CLIPArchitecture(
        image_size=16, patch_size=8, vision_width=24, vision_layers=1, vision_heads=2,
        vision_mlp_width=40, vocabulary_size=49408, context_length=77, text_width=48,
        text_layers=3, text_heads=4, text_mlp_width=72, projection_dim=20,
    )
    backbone = random_backbone(architecture, seed=21)
    backbone.trainable = False
    return backbone


def _classnames(count, rng, longest=8):
    """Names of 1..longest words; the first is one token, the second very long."""
    names = ["x", " ".join((WORDS * 2)[:25])]
    while len(names) < count:
        names.append(" ".join(rng.choice(WORDS, rng.integers(1, longest + 1))) + f" {len(names)}")
    return names[:count]


def _logits_and_gradients(model, images, weights, mode, token_ids=None):
    model.prompt_text_encoder.mode = mode
    with tf.GradientTape() as tape:
        logits = model(images) if token_ids is None else model.classify(images, token_ids)
        # A random linear functional of the logits: its gradient does not vanish
        # the way a saturated cross-entropy's does, so every path is exercised.
        loss = tf.reduce_sum(logits * weights)
    return logits, tape.gradient(loss, model.trainable_variables)


def _assert_same(model, images, num_classes, token_ids=None):
    weights = np.random.default_rng(5).normal(size=(len(images), num_classes)).astype("float32")
    slow, slow_grads = _logits_and_gradients(model, images, weights, "reference", token_ids)
    for mode in ("efficient", "padded"):
        fast, fast_grads = _logits_and_gradients(model, images, weights, mode, token_ids)
        assert max_relative_difference(fast, slow) <= TOLERANCE, mode
        for variable, a, b in zip(model.trainable_variables, fast_grads, slow_grads):
            assert max_relative_difference(a, b) <= TOLERANCE, (mode, variable.path)


@pytest.mark.parametrize(
    "batch, num_classes, chunk",
    [(1, 1, None), (1, 2, None), (3, 7, None), (3, 7, 3), (8, 40, 6), (2, 13, 1)],
)
def test_cocoop_efficient_equals_reference(clip, rng, batch, num_classes, chunk):
    # Initial weights from a fixed seed, as every other draw here: an unseeded draw whose
    # Meta-Net ReLUs are all dead leaves no gradient to compare.
    keras.utils.set_random_seed(0)
    names = _classnames(num_classes, rng)
    model = cocoop_tf.CoCoOp(clip, names, reduction=4)
    model.prompt_text_encoder.class_chunk_size = chunk
    for variable in model.trainable_variables:
        variable.assign(np.asarray(variable) + rng.normal(0, 0.05, variable.shape).astype("float32"))
    images = rng.uniform(0, 255, (batch, 16, 16, 3)).astype("float32")
    _assert_same(model, images, num_classes)


@pytest.mark.parametrize("n_ctx", [1, 4, 16])
def test_coop_efficient_equals_reference(clip, rng, n_ctx):
    names = _classnames(9, rng)
    model = cocoop_tf.CoOp(clip, names, n_ctx=n_ctx, ctx_init=None)
    images = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    _assert_same(model, images, 9)


def test_class_specific_context_efficient_equals_reference(clip, rng):
    names = _classnames(6, rng)
    model = cocoop_tf.CoOp(clip, names, n_ctx=3, ctx_init=None, class_specific=True)
    model.prompt_text_encoder.class_chunk_size = 4  # chunks must pick their own contexts
    for variable in model.trainable_variables:
        variable.assign(np.asarray(variable) + rng.normal(0, 0.05, variable.shape).astype("float32"))
    images = rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    _assert_same(model, images, 6)


@pytest.mark.parametrize("chunk", [None, 1, 4, 13, 50])
def test_class_set_given_as_a_tensor(clip, rng, chunk):
    """Exported graphs get token ids at run time: dynamic truncation, a loop over chunks of classes."""
    keras.utils.set_random_seed(0)  # initial weights, as in test_cocoop_efficient_equals_reference
    model = cocoop_tf.CoCoOp(clip, ["a"], reduction=4)
    model.prompt_text_encoder.class_chunk_size = chunk  # 4: the last chunk is padded
    token_ids = tf.constant(cocoop_tf.tokenize_classnames(_classnames(13, rng)))
    images = rng.uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    _assert_same(model, images, 13, token_ids)
    # In a graph with unknown batch and class count, as a SavedModel serves it.
    serve = tf.function(model.classify, input_signature=[
        tf.TensorSpec((None, 16, 16, 3), tf.float32), tf.TensorSpec((None, None), tf.int32)])
    model.prompt_text_encoder.mode = "reference"
    expected = model.classify(images, token_ids)
    model.prompt_text_encoder.mode = "efficient"
    assert max_relative_difference(serve(images, token_ids), expected) <= TOLERANCE


def test_zero_shot_efficient_equals_reference(clip, rng):
    model = cocoop_tf.ZeroShotCLIP(clip, _classnames(5, rng), template=["a photo of a {}.", "{} texture."])
    images = rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    token_ids = model.tokenize_classnames(model.classnames)
    model.prompt_text_encoder.mode = "efficient"
    fast = model.classify(images, token_ids)
    model.prompt_text_encoder.mode = "reference"
    slow = model.classify(images, token_ids)
    assert max_relative_difference(fast, slow) <= TOLERANCE


def test_longest_name_that_fits_the_context(clip, rng):
    # 70 name tokens + "." + start/end tokens + 4 context vectors = 77 positions.
    longest = " ".join(["word"] * 70)
    model = cocoop_tf.CoCoOp(clip, [longest, "x"], reduction=4)
    assert np.argmax(model.token_ids[0]) == 77 - 4 - 1
    images = rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    _assert_same(model, images, 2)


@pytest.mark.parametrize("batch, num_classes", [(1, 1), (4, 9)])
def test_efficient_under_xla_equals_reference(clip, rng, batch, num_classes):
    keras.utils.set_random_seed(0)  # initial weights, as in test_cocoop_efficient_equals_reference
    model = cocoop_tf.CoCoOp(clip, _classnames(num_classes, rng), reduction=4)
    for variable in model.trainable_variables:
        variable.assign(np.asarray(variable) + rng.normal(0, 0.05, variable.shape).astype("float32"))
    images = tf.constant(rng.uniform(0, 255, (batch, 16, 16, 3)).astype("float32"))
    weights = np.random.default_rng(5).normal(size=(batch, num_classes)).astype("float32")
    slow, slow_grads = _logits_and_gradients(model, images, weights, "reference")
    compiled = tf.function(lambda: _logits_and_gradients(model, images, weights, "efficient"), jit_compile=True)
    fast, fast_grads = compiled()
    assert max_relative_difference(fast, slow) <= TOLERANCE
    for variable, a, b in zip(model.trainable_variables, fast_grads, slow_grads):
        assert max_relative_difference(a, b) <= TOLERANCE, variable.path


def test_xla_training_and_evaluation_match_eager(clip, rng):
    names = _classnames(5, rng)
    images = rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 5, 8)
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(3)
        model = cocoop_tf.CoCoOp(clip, names, reduction=4)
        model.compile(optimizer=cocoop_tf.paper_optimizer(2, epochs=2, lr=0.01), jit_compile=jit)
        history = model.fit(images, labels, batch_size=4, epochs=2, verbose=0, shuffle=False)
        results.append((history.history["loss"], model.predict(images, verbose=0)))
    (eager_loss, eager_logits), (xla_loss, xla_logits) = results
    np.testing.assert_allclose(xla_loss, eager_loss, rtol=1e-4)
    assert max_relative_difference(xla_logits, eager_logits) <= 1e-4


def test_bad_mode(clip):
    with pytest.raises(ValueError, match="mode must be 'efficient', 'padded' or 'reference'"):
        cocoop_tf.layers.PromptTextEncoder(clip.text_encoder, clip.text_projection, mode="fast")


def test_fixed_class_sets_are_sorted_and_chunked_inside_fit_and_eagerly(clip, rng, monkeypatch):
    """Keras turns NumPy arguments into tensors; the chunked path must still run."""
    from cocoop_tf.layers import PromptTextEncoder

    chunks = []
    encode = PromptTextEncoder._encode
    monkeypatch.setattr(
        PromptTextEncoder, "_encode",
        lambda self, context, token_ids, classes=None, deep=None: (
            chunks.append(classes) or encode(self, context, token_ids, classes, deep)
        ),
    )
    model = cocoop_tf.CoCoOp(clip, _classnames(7, rng), reduction=4)
    model.prompt_text_encoder.class_chunk_size = 3
    images = rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    model(images)
    assert chunks and len(chunks) % 3 == 0  # each call: 3 chunks of at most 3 classes
    assert sorted(np.concatenate(chunks[:3]).tolist()) == list(range(7))
    chunks.clear()
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, np.array([0, 1]), epochs=1, verbose=0)  # traced in a tf.function
    assert chunks and len(chunks) % 3 == 0
    assert sorted(np.concatenate(chunks[:3]).tolist()) == list(range(7))


@pytest.mark.parametrize("batch", [1, 5])
def test_image_encoder_efficient_equals_reference(rng, batch):
    """Plain-matmul blocks, the last at the class token only: keras-hub's vision tower's numbers."""
    clip = cocoop_tf.load_clip("random_tiny")  # 2 vision blocks: a full one, then the last
    encoder = cocoop_tf.layers.CLIPImageEncoder(clip.vision_encoder, clip.vision_pooler, clip.vision_projection)
    images = tf.constant(rng.uniform(0, 255, (batch, 32, 32, 3)).astype("float32"))
    results = []
    for mode in ("efficient", "reference"):
        encoder.mode = mode
        with tf.GradientTape() as tape:
            tape.watch(images)
            features = encoder(images)
            loss = tf.reduce_sum(features * np.linspace(-1, 1, features.shape[-1]))
        results.append((features, tape.gradient(loss, images)))
    (fast, fast_grad), (slow, slow_grad) = results
    assert max_relative_difference(fast, slow) <= TOLERANCE
    assert max_relative_difference(fast_grad, slow_grad) <= TOLERANCE


@pytest.mark.parametrize("chunk", [None, 3])
def test_deep_prompts_efficient_equals_reference(clip, rng, chunk):
    """MaPLe's deep prompts: the packed, padded and full-length paths agree, values and gradients."""
    from cocoop_tf.layers import PromptTextEncoder

    names = _classnames(7, rng)
    token_ids = cocoop_tf.tokenize_classnames(names, n_ctx=2)
    context = tf.Variable(rng.normal(0, 0.1, (1, 2, 48)).astype("float32"))
    deep = tf.Variable(rng.normal(0, 0.1, (2, 2, 48)).astype("float32"))  # blocks 1 and 2 of 3
    encoder = PromptTextEncoder(clip.text_encoder, clip.text_projection, class_chunk_size=chunk)
    weights = rng.normal(size=(1, 7, 20)).astype("float32")

    def run(mode):
        encoder.mode = mode
        with tf.GradientTape() as tape:
            features = encoder(context, token_ids, deep)
            loss = tf.reduce_sum(features * weights)
        return features, tape.gradient(loss, [context, deep])

    slow, slow_grads = run("reference")
    assert max_relative_difference(encoder(context, token_ids), slow) > 1e-2  # the deep prompts count
    for mode in ("efficient", "padded"):
        fast, fast_grads = run(mode)
        assert max_relative_difference(fast, slow) <= TOLERANCE, mode
        for a, b in zip(fast_grads, slow_grads):
            assert max_relative_difference(a, b) <= TOLERANCE, mode
