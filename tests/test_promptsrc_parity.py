"""IVLP and PromptSRC against the official trainers' computation, written out from the raw weights.

The references build every class's prompt and every image's sequence one at a
time from the backbone's weights (the helpers of `test_prompt_parity`, which
share no code with the layers under test) and apply PromptSRC's loss as its
trainer computes it: cross-entropy, the two L1 terms and the logits' KL. GPA
is checked against its formula on a recorded sequence of epoch prompts.
"""

import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import max_relative_difference
from test_prompt_parity import CLASSNAMES
from test_prompt_parity import TOLERANCE
from test_prompt_parity import _loss
from test_prompt_parity import _odd_backbone
from test_prompt_parity import _perturb
from test_prompt_parity import _reference_image_feature
from test_prompt_parity import _reference_text_feature
from test_prompt_parity import _unit

import cocoop_tf
from cocoop_tf.clip.backbone import CLIP_MEAN
from cocoop_tf.clip.backbone import CLIP_STD
from cocoop_tf.clip.imagenet_templates import IMAGENET_TEMPLATES
from cocoop_tf.training import GaussianPromptAggregation
from cocoop_tf.training import gpa_weights


@pytest.fixture(scope="module")
def deep_clip():
    """Three blocks in each tower, odd widths: depths 2 and 3 of both towers."""
    return _odd_backbone(vision_layers=3, text_layers=3, seed=13)


@pytest.fixture(scope="module")
def frozen_text_reference(deep_clip):
    """Per class: the frozen CLIP's unnormalised features of the 60 templates, `[C, 60, D]`."""
    table = deep_clip.text_encoder.embedding.token_embedding.embeddings
    # The same hand-written transformer, compiled once: 300 prompts, no gradient needed.
    encode = tf.function(lambda embedded, eos: _reference_text_feature(deep_clip, embedded, eos))
    features = []
    for name in CLASSNAMES:
        row = []
        for template in IMAGENET_TEMPLATES:
            ids = cocoop_tf.tokenize(template.replace("{}", name.replace("_", " ")))[0]
            row.append(encode(tf.gather(table, ids), tf.constant(int(np.argmax(ids)))))
        features.append(tf.stack(row))
    return tf.stack(features)


def test_the_templates_are_the_official_sixty():
    assert len(IMAGENET_TEMPLATES) == len(set(IMAGENET_TEMPLATES)) == 60
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert IMAGENET_TEMPLATES[0] == "a photo of a {}." and IMAGENET_TEMPLATES[-1] == "itap of the {}."
    # sha256 of the official trainers/imagenet_templates.py list, joined by newlines.
    digest = hashlib.sha256("\n".join(IMAGENET_TEMPLATES).encode()).hexdigest()
    assert digest == "dc3398ed3ffc7c259342582bc0f36d7ac66c4dee17981a37b77b0fc9c23d4f72"


def _pixels(images):
    return ((images / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)).astype("float32")


def _ivlp_reference_features(clip, model, images, prompt_text):
    """IVLP's normalised image and class features as the official model computes them, one at a time."""
    learner = model.prompt_learner
    n_ctx = learner.n_ctx
    deep_text = [learner.deep_ctx[j] for j in range(learner.depth - 1)]
    no_prompt = tf.zeros((0, clip.vision_encoder.hidden_dim))
    vision = learner.vision_ctx if learner.vision_depth else no_prompt
    deep_vision = [learner.deep_vision_ctx[j] for j in range(learner.vision_depth - 1)]
    image_features = tf.stack(
        [_unit(_reference_image_feature(clip, p, vision, deep_vision)) for p in _pixels(images)]
    )
    table = clip.text_encoder.embedding.token_embedding.embeddings
    text_features = []
    for name in CLASSNAMES:
        # "{ctx_init} {name}.", its first n_ctx tokens replaced by the learned context.
        ids = cocoop_tf.tokenize(f"{prompt_text} {name.replace('_', ' ')}.")[0]
        embedded = tf.gather(table, ids)
        prompt = tf.concat([embedded[:1], learner.ctx, embedded[1 + n_ctx :]], axis=0)
        text_features.append(_unit(_reference_text_feature(clip, prompt, int(np.argmax(ids)), deep_text)))
    return image_features, tf.stack(text_features)


def _promptsrc_reference_terms(clip, model, images, labels, prompt_text, frozen_text):
    """PromptSRC's trainer: the prompted logits, then each weighted term of its loss."""
    image_features, text_features = _ivlp_reference_features(clip, model, images, prompt_text)
    scale = tf.exp(clip.clip_head.logit_scale)
    logits = scale * image_features @ tf.transpose(text_features)
    no_prompt = tf.zeros((0, clip.vision_encoder.hidden_dim))
    frozen_images = tf.stack([_unit(_reference_image_feature(clip, p, no_prompt, [])) for p in _pixels(images)])
    frozen_logits = scale * frozen_images @ tf.transpose(frozen_text)
    log_p, log_q = tf.nn.log_softmax(frozen_logits), tf.nn.log_softmax(logits)
    terms = {
        "cross_entropy": _loss(labels, logits),
        "text_l1": model.text_loss_weight * tf.reduce_mean(tf.abs(text_features - frozen_text)),
        "image_l1": model.image_loss_weight * tf.reduce_mean(tf.abs(image_features - frozen_images)),
        "kl": tf.reduce_sum(tf.exp(log_p) * (log_p - log_q)) / tf.cast(tf.size(logits), tf.float32),
    }
    return logits, terms


CASES = {
    # name: (method, settings, text of the official prompt)
    "ivlp_3_text_2_vision": (
        "IVLP", dict(n_ctx=4, prompt_depth=3, n_ctx_vision=2, vision_prompt_depth=2), "a photo of a"
    ),
    "ivlp_2_text_3_vision_fixed_words": (
        "IVLP", dict(n_ctx=2, prompt_depth=2, n_ctx_vision=4, vision_prompt_depth=3), "a photo of a"
    ),
    "ivlp_text_only": (
        "IVLP", dict(n_ctx=3, ctx_init=None, prompt_depth=1, vision_prompt_depth=0), "X X X"
    ),
    "promptsrc_3_text_2_vision": (
        "PromptSRC", dict(n_ctx=4, prompt_depth=3, n_ctx_vision=3, vision_prompt_depth=2), "a photo of a"
    ),
    "promptsrc_2_and_2": ("PromptSRC", dict(n_ctx=4, prompt_depth=2, n_ctx_vision=4), "a photo of a"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_official_forward_loss_and_gradients(deep_clip, frozen_text_reference, rng, case):
    method, settings, prompt_text = CASES[case]
    model = getattr(cocoop_tf, method)(deep_clip, CLASSNAMES, **settings)
    model.compile()
    learner = model.prompt_learner
    vision_depth = settings.get("vision_prompt_depth", settings["prompt_depth"])
    assert (learner.depth, learner.vision_depth, learner.n_ctx_vision) == (
        settings["prompt_depth"], vision_depth, settings.get("n_ctx_vision", 4)
    )
    if settings.get("ctx_init", "a photo of a"):  # the context starts as the first n_ctx words' embeddings
        ids = cocoop_tf.tokenize(prompt_text)[0, 1 : 1 + settings["n_ctx"]]
        table = np.asarray(deep_clip.text_encoder.embedding.token_embedding.embeddings)
        np.testing.assert_array_equal(np.asarray(learner.ctx), table[ids])
    for prompts in (learner.deep_ctx, learner.vision_ctx, learner.deep_vision_ctx):
        if prompts is not None:  # N(0, 0.02)
            assert 0.01 < np.asarray(prompts).std() < 0.03
    _perturb(model, rng)
    images = rng.uniform(0, 255, (3, 24, 24, 3)).astype("float32")
    labels = rng.integers(0, len(CLASSNAMES), 3)
    variables = model.trainable_variables
    assert len(variables) == 1 + (settings["prompt_depth"] > 1) + (vision_depth > 0) + (vision_depth > 1)
    promptsrc = method == "PromptSRC"
    if promptsrc:
        # The official mean over templates of the unnormalised features, then normalised.
        frozen_text = _unit(tf.reduce_mean(frozen_text_reference, axis=1))
        normalised_first = _unit(tf.reduce_mean(_unit(frozen_text_reference), axis=1))
        assert max_relative_difference(normalised_first, frozen_text) > 100 * TOLERANCE  # they differ here
        difference = max_relative_difference(model.frozen_text_features(), frozen_text)
        print(f"{case}: frozen text features {difference:.2e}")
        assert difference <= TOLERANCE

    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = model.compute_loss(images, labels, logits)
    gradients = tape.gradient(loss, variables)
    with tf.GradientTape() as tape:
        if promptsrc:
            expected, expected_terms = _promptsrc_reference_terms(
                deep_clip, model, images, labels, prompt_text, frozen_text
            )
            expected_loss = tf.add_n(list(expected_terms.values()))
        else:
            image_features, text_features = _ivlp_reference_features(deep_clip, model, images, prompt_text)
            expected = tf.exp(deep_clip.clip_head.logit_scale) * image_features @ tf.transpose(text_features)
            expected_loss = _loss(labels, expected)
    expected_gradients = tape.gradient(expected_loss, variables)

    differences = {"logits": max_relative_difference(logits, expected)}
    differences["loss"] = max_relative_difference(loss, expected_loss)
    if promptsrc:
        terms = model.loss_terms(images, labels)
        assert list(terms) == ["cross_entropy", "text_l1", "image_l1", "kl"]
        for name, value in terms.items():
            assert float(expected_terms[name]) > 0.01 * float(expected_loss), name  # every term counts
            differences[name] = max_relative_difference(value, expected_terms[name])
        np.testing.assert_allclose(float(loss), sum(float(v) for v in terms.values()), rtol=1e-5)
    else:
        assert not model.losses  # IVLP trains on the cross-entropy alone
    for variable, grad, expected_grad in zip(variables, gradients, expected_gradients):
        assert np.abs(np.asarray(expected_grad)).max() > 0, variable.path
        differences[f"d/{variable.path}"] = max_relative_difference(grad, expected_grad)
    print(f"{case}: " + ", ".join(f"{k} {v:.2e}" for k, v in differences.items()))
    assert max(differences.values()) <= TOLERANCE, differences
    # Inference is IVLP's: no terms; the served path (class ids as a tensor) gives the same logits.
    assert max_relative_difference(model(images), expected) <= TOLERANCE
    if case != "ivlp_3_text_2_vision":
        return  # MaPLe's served path, checked once with IVLP's prompts (its graph takes 2 s to trace)
    served = tf.function(lambda x, ids: model.classify(x, ids), reduce_retracing=True)
    token_ids = tf.constant(model.tokenize_classnames(CLASSNAMES))
    assert max_relative_difference(served(images, tf.identity(token_ids)), expected) <= TOLERANCE


def test_prompt_settings_are_checked_with_their_flags(deep_clip):
    for settings, message in [
        (dict(prompt_depth=4), r"prompt_depth \(--prompt-depth\) is 4, .* text tower has 3 blocks"),
        (dict(prompt_depth=0), r"prompt_depth \(--prompt-depth\) is 0"),
        (dict(prompt_depth=3, vision_prompt_depth=4), r"vision_prompt_depth \(--vision-prompt-depth\) is 4, .* 0 "),
        (dict(prompt_depth=3, vision_prompt_depth=-1), r"vision_prompt_depth \(--vision-prompt-depth\) is -1"),
        (dict(prompt_depth=2, n_ctx_vision=0), r"n_ctx_vision \(--n-ctx-vision\) must be a whole number"),
        (dict(prompt_depth=2, n_ctx_vision=2.5), r"n_ctx_vision \(--n-ctx-vision\) .* got 2\.5"),
    ]:
        with pytest.raises(ValueError, match=message):
            cocoop_tf.IVLP(deep_clip, ["cat"], **settings)
    for settings, message in [
        (dict(text_loss_weight=float("nan")), r"text_loss_weight \(--text-loss-weight\) must be a finite number"),
        (dict(image_loss_weight=-1.0), r"image_loss_weight \(--image-loss-weight\) must be a finite number >= 0"),
        (dict(gpa_std=0.0), r"gpa_std \(--gpa-std\) must be greater than 0"),
        (dict(gpa_mean="15"), r"gpa_mean \(--gpa-mean\) must be a finite number"),
    ]:
        with pytest.raises(ValueError, match=message):
            cocoop_tf.PromptSRC(deep_clip, ["cat"], prompt_depth=2, **settings)


def test_prompt_files_are_checked_against_their_config(deep_clip, tmp_path):
    model = cocoop_tf.PromptSRC(deep_clip, ["cat", "dog"], prompt_depth=3, n_ctx_vision=2, vision_prompt_depth=2)
    path = tmp_path / "promptsrc.safetensors"
    model.save_prompt(path)
    # The file holds the prompts only: the GPA sums are not part of it.
    tensors, _ = cocoop_tf.models.read_prompt(path)
    assert sorted(tensors) == sorted(v.path for v in model.trainable_weights)
    loaded = cocoop_tf.PromptSRC.from_prompt(deep_clip, path, classnames=["bird"])
    assert (loaded.n_ctx_vision, loaded.vision_prompt_depth, loaded.text_loss_weight) == (2, 2, 25.0)
    shapes = {v.path: tuple(v.shape) for v in model.trainable_weights}
    config = model.get_config()
    cocoop_tf.PromptSRC.check_prompt_config(config, shapes)
    for change, message in [
        ({"n_ctx_vision": 20_000_000}, r"n_ctx_vision=20000000, .*/vision_ctx should have shape \(20000000, 'width'\)"),
        ({"vision_prompt_depth": 0}, r"vision_prompt_depth=0, which has no prompt_learner/vision_ctx"),
        ({"prompt_depth": 10**9}, r"prompt_depth=1000000000, .*/deep_ctx should have shape"),
        ({"n_ctx_vision": "2"}, r"its config says n_ctx_vision='2', not a count"),
    ]:
        with pytest.raises(ValueError, match=message):
            cocoop_tf.PromptSRC.check_prompt_config({**config, **change}, shapes)
    missing = {k: v for k, v in shapes.items() if k != "prompt_learner/deep_vision_ctx"}
    with pytest.raises(ValueError, match="deep_vision_ctx should have shape .* but it is missing"):
        cocoop_tf.IVLP.check_prompt_config(config, missing)


def test_gpa_weights_follow_the_official_formula():
    mean, std = 15.0, 1.0
    gauss = [(1 / (std * np.sqrt(2 * np.pi))) * np.exp(-0.5 * ((e - mean) / std) ** 2) for e in range(1, 21)]
    expected = np.array(gauss) / sum(gauss)
    weights = gpa_weights(20, mean, std)
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12) and weights.argmax() == 14
    # Far from the mean the density underflows; the normalised weights do not.
    far = gpa_weights(3, 15.0, 0.1)
    assert np.isfinite(far).all() and far[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"gpa_std \(--gpa-std\) must be greater than 0"):
        gpa_weights(20, 15.0, 0.0)
    with pytest.raises(ValueError, match="epochs must be a whole number"):
        gpa_weights(0)


@pytest.fixture(scope="module")
def tiny_clip():
    return cocoop_tf.load_clip("random_tiny")


def _weights(model):
    return [np.asarray(v).astype(np.float64) for v in model.trainable_weights]


def _aggregate(weights, recorded):
    return [sum(w * epoch[i] for w, epoch in zip(weights, recorded)) for i in range(len(recorded[0]))]


def test_classes_whose_templates_are_too_long_are_refused_for_training_only(tiny_clip, rng):
    long_name = " ".join(["x"] * 68)  # fits IVLP's 4 context vectors, not "a photo of the hard to see {}."
    model = cocoop_tf.PromptSRC(tiny_clip, ["cat", long_name], prompt_depth=1)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert model(images).shape == (2, 2)
    model.compile(optimizer=cocoop_tf.paper_optimizer(1, epochs=1, warmup_epochs=0))
    with pytest.raises(ValueError, match=r"60 ImageNet templates\. .*'a photo of the hard to see x x .* needs 78"):
        model.fit(images, np.array([0, 1]), verbose=0)
    model.set_classnames(["cat", "dog", "bird"])  # a new class set: its own frozen features
    assert model.frozen_text_features().shape == (3, 32)


def test_gpa_callback_aggregates_epochs_and_resumes(tiny_clip, rng, tmp_path):
    """Driven by hand: epoch prompts set, then the callback's epoch hooks, as fit calls them."""
    model = cocoop_tf.PromptSRC(tiny_clip, ["cat", "dog"], prompt_depth=2, gpa_mean=2.5, gpa_std=1.5)
    assert model.resume_variables == model.gpa_sums and len(model.gpa_sums) == 4
    assert all(not v.trainable and v.dtype == "float32" for v in model.gpa_sums)
    epochs = 4
    recorded = [[rng.normal(0, 1, v.shape).astype("float32") for v in model.trainable_weights] for _ in range(epochs)]

    def run(callback, epoch_numbers):
        callback.set_model(model)
        callback.set_params({"epochs": epochs, "steps": 1, "verbose": 0})
        callback.on_train_begin()
        for epoch in epoch_numbers:
            callback.on_epoch_begin(epoch)
            for variable, value in zip(model.trainable_weights, recorded[epoch]):
                variable.assign(value)
            callback.on_epoch_end(epoch)

    weights = gpa_weights(epochs, 2.5, 1.5)
    expected = _aggregate(weights, [[v.astype(np.float64) for v in epoch] for epoch in recorded])
    for sums in model.gpa_sums:  # a fresh run (from epoch 0) starts from zero sums
        sums.assign(np.full(sums.shape, 7.0, "float32"))
    run(GaussianPromptAggregation(epochs, 2.5, 1.5), range(epochs))
    for got, want in zip(_weights(model), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    # Interrupted after epoch 2: a checkpoint keeps the sums (resume_variables), a new fit resumes at 2.
    run(GaussianPromptAggregation(epochs, 2.5, 1.5), range(2))
    partial = model.resume_variables[0].numpy()
    np.testing.assert_allclose(partial, weights[0] * recorded[0][0] + weights[1] * recorded[1][0], rtol=1e-6, atol=1e-6)
    model(np.zeros((1, 32, 32, 3), "float32"))  # built, as a trained model is
    model.save(tmp_path / "checkpoint.keras")
    resumed = keras.saving.load_model(tmp_path / "checkpoint.keras")
    np.testing.assert_array_equal(resumed.resume_variables[0].numpy(), partial)
    model = resumed
    run(GaussianPromptAggregation(epochs, 2.5, 1.5), range(2, epochs))
    for got, want in zip(_weights(model), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    with pytest.raises(ValueError, match=r"GaussianPromptAggregation\(epochs=3\) in a fit of 4 epochs"):
        run(GaussianPromptAggregation(3), [])
    ivlp = cocoop_tf.IVLP(tiny_clip, ["cat"], prompt_depth=2)
    callback = GaussianPromptAggregation(2)
    callback.set_model(ivlp)
    with pytest.raises(ValueError, match="needs a model that holds its running sums"):
        callback.on_train_begin()


class _Recorder(keras.callbacks.Callback):
    """Per epoch (one step each): the loss terms before the step, the weights after it and at epoch end."""

    def __init__(self, images, labels):
        super().__init__()
        self.data = (images, labels)
        self.terms, self.after_step, self.at_epoch_end = [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.terms.append({k: float(v) for k, v in self.model.loss_terms(*self.data).items()})

    def on_train_batch_end(self, batch, logs=None):
        self.after_step.append(_weights(self.model))

    def on_epoch_end(self, epoch, logs=None):
        self.at_epoch_end.append(_weights(self.model))


# One step per epoch (a batch of 4), a learning rate that moves the prompts, GPA spread over the epochs.
FIT = dict(classnames=["cat", "dog", "bird"], prompt_depth=2, gpa_mean=2.0, gpa_std=1.0, epochs=3, lr=0.5)


def _fit_model(strategy=None):
    """The PromptSRC model and optimiser both fits use (the script below builds the same)."""
    with (strategy or tf.distribute.get_strategy()).scope():
        model = cocoop_tf.PromptSRC(
            cocoop_tf.load_clip("random_tiny"), FIT["classnames"], prompt_depth=FIT["prompt_depth"],
            gpa_mean=FIT["gpa_mean"], gpa_std=FIT["gpa_std"],
        )
        model.compile(optimizer=cocoop_tf.paper_optimizer(1, epochs=FIT["epochs"], warmup_epochs=0, lr=FIT["lr"]))
    return model


@pytest.fixture(scope="module")
def one_device_fit(tmp_path_factory):
    """A fit on one device, its start, per-epoch records and history; the start saved for other processes."""
    model = _fit_model()
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1, 2, 0])
    start = [np.asarray(v) for v in model.trainable_weights]
    recorder = _Recorder(images, labels)
    history = model.fit(images, labels, batch_size=4, epochs=FIT["epochs"], callbacks=[recorder], verbose=0).history
    path = tmp_path_factory.mktemp("fit") / "start.npz"
    np.savez(path, images, labels, *start)
    return model, recorder, history, path


def test_fit_aggregates_the_epoch_prompts_and_logs_each_term(one_device_fit):
    model, recorder, history, _ = one_device_fit
    mean, std = FIT["gpa_mean"], FIT["gpa_std"]
    # The official formula, written out: w_e = g(e) / sum(g), g the N(mean, std) density at e = 1..N.
    gauss = np.array([np.exp(-0.5 * ((e - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi)) for e in (1, 2, 3)])
    final = _aggregate(gauss / gauss.sum(), recorder.after_step)
    assert not np.allclose(recorder.after_step[0][0], recorder.after_step[-1][0], atol=1e-3)  # it trained
    for got, want, last in zip(_weights(model), final, recorder.after_step[-1]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert np.abs(want - last).max() > 1e-4  # the aggregate is not the last epoch's prompt
    # GPA ran first: a callback after it (a checkpoint) sees the aggregated prompt at the last epoch's end.
    for got, want in zip(recorder.at_epoch_end[-1], final):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    # Each epoch's logged term is that epoch's (the trackers restart every epoch), and loss is their sum.
    assert sorted(history) == ["accuracy", "image_l1", "kl", "loss", "text_l1"]
    for epoch, terms in enumerate(recorder.terms):
        for name in ("text_l1", "image_l1", "kl"):
            assert history[name][epoch] == pytest.approx(terms[name], rel=1e-4), (name, epoch)
        assert history["loss"][epoch] == pytest.approx(sum(terms.values()), rel=1e-4)
    assert history["text_l1"][0] != pytest.approx(history["text_l1"][2], rel=1e-3)
    # Evaluation adds no terms and shows none.
    assert sorted(model.evaluate(*recorder.data, return_dict=True, verbose=0)) == ["accuracy", "loss"]


MIRRORED_SCRIPT = """
import json
import sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {tests!r})
from test_promptsrc_parity import FIT, _fit_model

model = _fit_model(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
with np.load({start!r}) as saved:
    images, labels, *start = (saved[f"arr_{{i}}"] for i in range(len(saved.files)))
for variable, value in zip(model.trainable_weights, start):
    variable.assign(value)
data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
history = model.fit(data, epochs=FIT["epochs"], verbose=0).history
weights = [np.asarray(v).tolist() for v in model.trainable_weights]
print("RESULT " + json.dumps({{"history": history, "weights": weights}}))
"""


def test_terms_and_aggregation_under_a_mirrored_strategy(one_device_fit):
    """Two replicas of 2 images give the one-device numbers of batches of 4: no term counted twice."""
    model, _, history, start = one_device_fit
    script = MIRRORED_SCRIPT.format(tests=os.path.dirname(__file__), start=str(start))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-5000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    mirrored = json.loads(line[len("RESULT "):])
    assert sorted(mirrored["history"]) == sorted(history)
    for name, values in history.items():
        np.testing.assert_allclose(mirrored["history"][name], values, rtol=1e-4, err_msg=name)
    for got, want in zip(mirrored["weights"], _weights(model)):
        assert max_relative_difference(got, want) <= 1e-4
