"""CoCoOp and CoOp against the paper's equations, computed the slow, obvious way.

The reference below builds every (image, class) prompt separately at the full
context length, runs a hand-written causal transformer on it from the
backbone's raw weights, and applies the paper's formulas. It shares no code
with the layers under test.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import max_relative_difference

import cocoop_tf
from cocoop_tf.clip.backbone import CLIP_MEAN
from cocoop_tf.clip.backbone import CLIP_STD
from cocoop_tf.clip.backbone import CLIPArchitecture
from cocoop_tf.clip.backbone import random_backbone

CLASSNAMES = [
    "forest_path",
    "Boeing 747-400",
    "crème brûlée",
    "x",
    "a very long class name with many many words in it for good measure",
]
TOLERANCE = 1e-4


def _odd_backbone(vision_layers, text_layers, seed):
    """Odd widths, unequal towers, more than one head; layer norms and biases not at their defaults."""
    architecture = CLIPArchitecture(
        image_size=24, patch_size=8, vision_width=36, vision_layers=vision_layers, vision_heads=3,
        vision_mlp_width=50, vocabulary_size=49408, context_length=77, text_width=60,
        text_layers=text_layers, text_heads=3, text_mlp_width=84, projection_dim=44,
    )
    backbone = random_backbone(architecture, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for variable in backbone.weights:
        if variable.path.endswith(("gamma", "beta")) or variable.path.endswith("bias"):
            variable.assign(np.asarray(variable) + rng.normal(0, 0.1, variable.shape).astype("float32"))
    backbone.trainable = False
    return backbone


@pytest.fixture(scope="module")
def clip():
    return _odd_backbone(vision_layers=1, text_layers=2, seed=11)


def _layer_norm(x, gamma, beta):
    mean = tf.reduce_mean(x, -1, keepdims=True)
    var = tf.reduce_mean(tf.square(x - mean), -1, keepdims=True)
    return (x - mean) / tf.sqrt(var + 1e-5) * gamma + beta


def _reference_block(block, x, mask):
    """One pre-norm CLIP block on one sequence [L, D], from its raw weights; `mask` is added to scores."""
    width = x.shape[-1]
    att = block.attention
    heads = block.num_heads
    head_dim = width // heads
    h = _layer_norm(x, block.layer_norm_1.gamma, block.layer_norm_1.beta)
    q = h @ tf.reshape(att.query_dense.kernel, (width, width)) + tf.reshape(att.query_dense.bias, (-1,))
    k = h @ tf.reshape(att.key_dense.kernel, (width, width)) + tf.reshape(att.key_dense.bias, (-1,))
    v = h @ tf.reshape(att.value_dense.kernel, (width, width)) + tf.reshape(att.value_dense.bias, (-1,))
    outputs = []
    for i in range(heads):
        s = slice(i * head_dim, (i + 1) * head_dim)
        scores = q[:, s] @ tf.transpose(k[:, s]) / np.sqrt(head_dim) + mask
        outputs.append(tf.nn.softmax(scores, axis=-1) @ v[:, s])
    attended = tf.concat(outputs, axis=-1)
    x = x + attended @ tf.reshape(att.output_dense.kernel, (width, width)) + att.output_dense.bias
    h = _layer_norm(x, block.layer_norm_2.gamma, block.layer_norm_2.beta)
    h = h @ block.dense_1.kernel + block.dense_1.bias
    h = h * tf.sigmoid(1.702 * h)  # QuickGELU
    return x + h @ block.dense_2.kernel + block.dense_2.bias


def _reference_text_feature(clip, embeddings, eos, deep_prompts=()):
    """CLIP's text transformer on one prompt [L, D], read at `eos`, projected.

    `deep_prompts[j - 1]` ([M, D]) replaces positions 1..M before block j, as
    MaPLe's text blocks do.
    """
    text = clip.text_encoder
    length = embeddings.shape[0]
    x = embeddings + text.embedding.position_embedding.position_embeddings[:length]
    future = np.triu(np.full((length, length), -np.inf, np.float32), k=1)
    for j, block in enumerate(text.encoder_layers):
        if 1 <= j <= len(deep_prompts):
            prompt = deep_prompts[j - 1]
            x = tf.concat([x[:1], prompt, x[1 + prompt.shape[0] :]], axis=0)
        x = _reference_block(block, x, future)
    x = _layer_norm(x, text.layer_norm.gamma, text.layer_norm.beta)
    return (x[eos][None] @ clip.text_projection.kernel)[0]


def _reference_image_feature(clip, pixels, prompt, deep_prompts):
    """MaPLe's vision transformer on one normalised image [S, S, 3]: prompts appended, then replaced."""
    vision = clip.vision_encoder
    embedding = vision.embedding
    patches = tf.nn.conv2d(pixels[None], embedding.patch_embedding.kernel, embedding.patch_size, "VALID")
    x = tf.concat([embedding.class_embedding[None], tf.reshape(patches, (-1, patches.shape[-1]))], axis=0)
    x = x + embedding.position_embedding.embeddings
    x = tf.concat([x, prompt], axis=0)
    x = _layer_norm(x, vision.pre_layer_norm.gamma, vision.pre_layer_norm.beta)
    for j, block in enumerate(vision.encoder_layers):
        if 1 <= j <= len(deep_prompts):
            x = tf.concat([x[: -prompt.shape[0]], deep_prompts[j - 1]], axis=0)
        x = _reference_block(block, x, 0.0)
    x = _layer_norm(x[0], vision.layer_norm.gamma, vision.layer_norm.beta)
    return (x[None] @ clip.vision_projection.kernel)[0]


def _unit(x):
    return x / tf.norm(x, axis=-1, keepdims=True)


def _reference_logits(clip, model, images, classnames, prompt_prefix, conditional):
    """Per image, per class, full-length prompts: the paper's equations."""
    pixels = (images / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    image_features = _unit(clip.get_vision_embeddings(pixels.astype("float32")))
    token_table = clip.text_encoder.embedding.token_embedding.embeddings
    ctx = model.prompt_learner.ctx
    n_ctx = model.n_ctx
    rows = []
    for b in range(len(images)):
        feature = image_features[b]
        if conditional:  # Meta-Net on the normalised image feature
            net = model.meta_net
            hidden = tf.nn.relu(feature[None] @ net.linear1.kernel + net.linear1.bias)
            pi = (hidden @ net.linear2.kernel + net.linear2.bias)[0]
        row = []
        for c, name in enumerate(classnames):
            ids = cocoop_tf.tokenize(f"{prompt_prefix} {name.replace('_', ' ')}.")[0]
            embedded = tf.gather(token_table, ids)
            context = ctx[c] if len(ctx.shape) == 3 else ctx
            if conditional:
                context = context + pi
            prompt = tf.concat([embedded[:1], context, embedded[1 + n_ctx :]], axis=0)
            text_feature = _unit(_reference_text_feature(clip, prompt, int(np.argmax(ids))))
            row.append(tf.reduce_sum(feature * text_feature))
        rows.append(tf.stack(row))
    return tf.exp(clip.clip_head.logit_scale) * tf.stack(rows)


def _loss(labels, logits):
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )


def _check_parity(clip, model, prompt_prefix, conditional, batch, rng):
    images = rng.uniform(0, 255, (batch, 24, 24, 3)).astype("float32")
    labels = rng.integers(0, len(CLASSNAMES), batch)
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        logits = model(images)
        loss = _loss(labels, logits)
    gradients = tape.gradient(loss, variables)
    with tf.GradientTape() as tape:
        expected = _reference_logits(clip, model, images, CLASSNAMES, prompt_prefix, conditional)
        expected_loss = _loss(labels, expected)
    expected_gradients = tape.gradient(expected_loss, variables)
    assert logits.shape == (batch, len(CLASSNAMES))
    assert max_relative_difference(logits, expected) <= TOLERANCE
    for variable, grad, expected_grad in zip(variables, gradients, expected_gradients):
        assert np.abs(np.asarray(expected_grad)).max() > 0, variable.path
        assert max_relative_difference(grad, expected_grad) <= TOLERANCE, variable.path


def _perturb(model, rng):
    """Move the learned weights away from their initial values."""
    for variable in model.trainable_variables:
        variable.assign(np.asarray(variable) + rng.normal(0, 0.05, variable.shape).astype("float32"))


@pytest.mark.parametrize("batch", [1, 3])
def test_cocoop_matches_the_paper_equations(clip, rng, batch):
    model = cocoop_tf.CoCoOp(clip, CLASSNAMES, reduction=4)
    _perturb(model, rng)
    _check_parity(clip, model, "a photo of a", conditional=True, batch=batch, rng=rng)


def test_cocoop_random_context(clip, rng):
    model = cocoop_tf.CoCoOp(clip, CLASSNAMES, n_ctx=7, ctx_init=None, reduction=4)
    _check_parity(clip, model, "X X X X X X X", conditional=True, batch=2, rng=rng)


def test_coop_matches_the_paper_equations(clip, rng):
    model = cocoop_tf.CoOp(clip, CLASSNAMES)
    _perturb(model, rng)
    _check_parity(clip, model, "a photo of a", conditional=False, batch=3, rng=rng)


def test_coop_class_specific_context(clip, rng):
    model = cocoop_tf.CoOp(clip, CLASSNAMES, n_ctx=3, ctx_init=None, class_specific=True)
    assert model.prompt_learner.ctx.shape == (len(CLASSNAMES), 3, 60)
    _perturb(model, rng)
    _check_parity(clip, model, "X X X", conditional=False, batch=2, rng=rng)


def test_context_initialised_from_word_embeddings(clip):
    model = cocoop_tf.CoCoOp(clip, CLASSNAMES, ctx_init="a photo of a")
    ids = cocoop_tf.tokenize("a photo of a")[0, 1:5]  # 320, 1125, 539, 320
    table = np.asarray(clip.text_encoder.embedding.token_embedding.embeddings)
    np.testing.assert_array_equal(np.asarray(model.prompt_learner.ctx), table[ids])
    random = cocoop_tf.CoOp(clip, CLASSNAMES, n_ctx=16, ctx_init=None)
    values = np.asarray(random.prompt_learner.ctx)
    assert values.shape == (16, 60) and 0.015 < values.std() < 0.025


def test_trainable_numbers_for_vit_b16():
    """CoCoOp: context 4 x 512 and Meta-Net 512 -> 32 -> 512, 35 360 numbers; CoOp 2 048;
    MaPLe (J = 9, M = 2): context 2 x 512, 8 deep prompts 2 x 512, 9 coupling layers
    512 -> 768 with biases, 3.55 M (the paper's 3.55 M)."""
    clip = cocoop_tf.load_clip("random_vit_b16")
    model = cocoop_tf.CoCoOp(clip, ["a", "b"])
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == 35_360
    assert model.meta_net.linear1.kernel.shape == (512, 32)
    coop = cocoop_tf.CoOp(clip, ["a", "b"])
    assert sum(int(np.prod(v.shape)) for v in coop.trainable_weights) == 2_048
    maple = cocoop_tf.MaPLe(clip, ["a", "b"])
    assert sum(int(np.prod(v.shape)) for v in maple.trainable_weights) == 2 * 512 * 9 + 9 * (512 * 768 + 768)
    assert maple.tokenize_classnames(["dog"])[0, :5].tolist() == cocoop_tf.tokenize("of a dog.")[0, :5].tolist()
    del clip, model, coop, maple
    keras.backend.clear_session()


@pytest.mark.parametrize("template", ["a photo of a {}, a type of pet.", ["a {}.", "itap of the {}."]])
def test_kgcoop_loss_matches_the_official_formula(clip, rng, template):
    """Cross-entropy + w * (1 - mean cos(learned, hand-crafted)), as KgCoOp's trainer computes it."""
    model = cocoop_tf.KgCoOp(clip, CLASSNAMES, template=template, kg_weight=8.0)
    model.compile()
    _perturb(model, rng)
    images = rng.uniform(0, 255, (3, 24, 24, 3)).astype("float32")
    labels = rng.integers(0, len(CLASSNAMES), 3)
    token_table = clip.text_encoder.embedding.token_embedding.embeddings
    templates = [template] if isinstance(template, str) else template
    hand_crafted = []
    for name in CLASSNAMES:
        features = []
        for text in templates:
            ids = cocoop_tf.tokenize(text.format(name.replace("_", " ")))[0]
            features.append(_unit(_reference_text_feature(clip, tf.gather(token_table, ids), int(np.argmax(ids)))))
        hand_crafted.append(_unit(tf.reduce_mean(tf.stack(features), axis=0)))
    hand_crafted = tf.stack(hand_crafted)
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = model.compute_loss(images, labels, logits)
    gradients = tape.gradient(loss, variables)
    with tf.GradientTape() as tape:
        expected_logits = _reference_logits(clip, model, images, CLASSNAMES, "a photo of a", conditional=False)
        learned = []
        for name in CLASSNAMES:
            ids = cocoop_tf.tokenize(f"a photo of a {name.replace('_', ' ')}.")[0]
            embedded = tf.gather(token_table, ids)
            prompt = tf.concat([embedded[:1], model.prompt_learner.ctx, embedded[5:]], axis=0)
            learned.append(_unit(_reference_text_feature(clip, prompt, int(np.argmax(ids)))))
        cosine = tf.reduce_sum(tf.stack(learned) * hand_crafted, -1)
        expected_loss = _loss(labels, expected_logits) + 8.0 * (1.0 - tf.reduce_mean(cosine))
    expected_gradients = tape.gradient(expected_loss, variables)
    assert max_relative_difference(logits, expected_logits) <= TOLERANCE
    assert 8.0 * (1.0 - float(tf.reduce_mean(cosine))) > 0.01 * float(expected_loss)  # the term counts
    np.testing.assert_allclose(float(loss), float(expected_loss), rtol=TOLERANCE)
    for variable, grad, expected_grad in zip(variables, gradients, expected_gradients):
        assert max_relative_difference(grad, expected_grad) <= TOLERANCE, variable.path
    # Inference is CoOp's: no term, the same logits.
    np.testing.assert_allclose(model(images), logits, rtol=1e-5, atol=1e-5)
    assert not model.losses


def test_kgcoop_evaluates_classes_whose_hand_crafted_prompt_is_too_long(clip, rng):
    long_name = " ".join(["x"] * 68)  # fits CoOp's 4 context vectors, not the pet template
    model = cocoop_tf.KgCoOp(clip, ["cat", long_name], template="a photo of a {}, a type of pet.")
    images = rng.uniform(0, 255, (2, 24, 24, 3)).astype("float32")
    assert model(images).shape == (2, 2)
    model.compile(optimizer=cocoop_tf.paper_optimizer(1, epochs=1, warmup_epochs=0))
    with pytest.raises(ValueError, match=r"a type of pet\.' needs 80 positions .* context length is 77"):
        model.fit(images, np.array([0, 1]), verbose=0)


@pytest.fixture(scope="module")
def deep_clip():
    """Three blocks in each tower: MaPLe's depth needs them."""
    return _odd_backbone(vision_layers=3, text_layers=3, seed=13)


def _maple_reference_logits(clip, model, images, classnames, ctx_init):
    """MaPLe's forward as the official trainer computes it, one image and one class at a time."""
    learner = model.prompt_learner
    n_ctx = learner.n_ctx
    deep_text = [learner.deep_ctx[j] for j in range(learner.depth - 1)]
    vision_prompt = learner.ctx @ learner.coupling_kernel + learner.coupling_bias  # proj(ctx)
    deep_vision = [
        deep_text[j] @ learner.deep_coupling_kernels[j] + learner.deep_coupling_biases[j] for j in range(len(deep_text))
    ]
    pixels = ((images / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)).astype("float32")
    image_features = tf.stack([_unit(_reference_image_feature(clip, p, vision_prompt, deep_vision)) for p in pixels])
    token_table = clip.text_encoder.embedding.token_embedding.embeddings
    text_features = []
    for name in classnames:
        # The official prompt text is "{ctx_init} {name}."; its first n_ctx word tokens become the context.
        ids = cocoop_tf.tokenize(f"{ctx_init} {name.replace('_', ' ')}.")[0]
        embedded = tf.gather(token_table, ids)
        prompt = tf.concat([embedded[:1], learner.ctx, embedded[1 + n_ctx :]], axis=0)
        text_features.append(_unit(_reference_text_feature(clip, prompt, int(np.argmax(ids)), deep_text)))
    return tf.exp(clip.clip_head.logit_scale) * image_features @ tf.transpose(tf.stack(text_features))


@pytest.mark.parametrize("depth, n_ctx, ctx_init", [(3, 2, "a photo of a"), (2, 3, "a photo of a"), (1, 2, None)])
def test_maple_matches_the_official_forward(deep_clip, rng, depth, n_ctx, ctx_init):
    model = cocoop_tf.MaPLe(deep_clip, CLASSNAMES, n_ctx=n_ctx, ctx_init=ctx_init, prompt_depth=depth)
    if ctx_init:  # the context starts as the embeddings of the first n_ctx words
        ids = cocoop_tf.tokenize(ctx_init)[0, 1 : 1 + n_ctx]
        table = np.asarray(deep_clip.text_encoder.embedding.token_embedding.embeddings)
        np.testing.assert_array_equal(np.asarray(model.prompt_learner.ctx), table[ids])
    if depth > 1:  # the deep coupling layers start as clones of one layer
        kernels = np.asarray(model.prompt_learner.deep_coupling_kernels)
        assert all(np.array_equal(k, kernels[0]) for k in kernels)
    _perturb(model, rng)
    images = rng.uniform(0, 255, (3, 24, 24, 3)).astype("float32")
    labels = rng.integers(0, len(CLASSNAMES), 3)
    variables = model.trainable_variables
    assert len(variables) == (6 if depth > 1 else 3)
    with tf.GradientTape() as tape:
        logits = model(images)
        loss = _loss(labels, logits)
    gradients = tape.gradient(loss, variables)
    with tf.GradientTape() as tape:
        expected = _maple_reference_logits(deep_clip, model, images, CLASSNAMES, ctx_init or "X X X"[: 2 * n_ctx - 1])
        expected_loss = _loss(labels, expected)
    expected_gradients = tape.gradient(expected_loss, variables)
    assert max_relative_difference(logits, expected) <= TOLERANCE
    for variable, grad, expected_grad in zip(variables, gradients, expected_gradients):
        assert np.abs(np.asarray(expected_grad)).max() > 0, variable.path
        assert max_relative_difference(grad, expected_grad) <= TOLERANCE, variable.path
    # The served path (class token ids as a tensor) computes the same logits.
    token_ids = tf.constant(model.tokenize_classnames(CLASSNAMES))
    served = tf.function(lambda x, ids: model.classify(x, ids), reduce_retracing=True)
    assert max_relative_difference(served(images, tf.identity(token_ids)), expected) <= TOLERANCE
