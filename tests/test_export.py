"""Exported models as deployments run them.

SavedModels run in a subprocess that can import TensorFlow alone (as TF
Serving loads them); TFLite models run in the LiteRT interpreter, which has
no Flex delegate. Both are compared with the Keras model on class sets and
batch sizes the model never saw in training.

PromptSRC stands for IVLP too: it is IVLP with training terms, and what an
export serves (`tokenize_classnames`, `encode_images`, `class_features`) is
IVLP's own code, unchanged.
"""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import cocoop_tf
from cocoop_tf.export import export_saved_model
from cocoop_tf.export import export_tflite
from cocoop_tf.export import model_info
from cocoop_tf.export import serving_functions
from cocoop_tf.export import serving_token_ids
from conftest import max_relative_difference

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 60, 220),
    "yellow": (230, 220, 40),
    "purple": (150, 50, 180),
}
# (batch size, class names): none of them seen in training (5 classes, batches of 8).
NEW_CASES = [
    (1, ["orange", "pink", "cup_of_coffee"]),
    (3, ["cat", "dog", "car", "tree", "house", "a very large red fire truck", "sky"]),
    (6, ["teal"]),
]
# An end token at index 72 is the last that fits beside CoCoOp's 4 context vectors.
LONGEST_NAME_IDS = np.array([[49406] + [320] * 71 + [49407] + [0] * 4], np.int32)


def color_images(rng, n):
    """Images whose dominant colour is their class: a task CoCoOp learns in seconds."""
    labels = rng.integers(0, len(COLORS), n)
    base = np.array(list(COLORS.values()), np.float32)[labels][:, None, None, :]
    blocks = np.repeat(np.repeat(rng.normal(0, 40, (n, 4, 4, 3)), 8, 1), 8, 2)
    images = base + blocks + rng.normal(0, 20, (n, 32, 32, 3))
    return np.clip(images, 0, 255).astype(np.float32), labels


@pytest.fixture(scope="module")
def clip():
    return cocoop_tf.load_clip("random_tiny")


@pytest.fixture(scope="module")
def trained(clip):
    """A CoCoOp trained on the colour task, with its held-out test images."""
    keras.utils.set_random_seed(0)  # the Meta-Net's initial weights and fit's shuffling
    rng = np.random.default_rng(0)
    model = cocoop_tf.CoCoOp(clip, list(COLORS))
    images, labels = color_images(rng, 80)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(images, labels, batch_size=8, epochs=15, verbose=0)
    test_images, test_labels = color_images(rng, 300)
    return model, test_images, test_labels


@pytest.fixture(scope="module")
def cases(trained):
    """Inputs never seen in training, with the Keras model's logits."""
    model = trained[0]
    rng = np.random.default_rng(1)
    result = []
    for batch, names in NEW_CASES:
        images = rng.uniform(0, 255, (batch, 32, 32, 3)).astype(np.float32)
        token_ids = serving_token_ids(model, names)
        result.append((images, token_ids, np.asarray(model.classify(images, token_ids))))
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    token_ids = np.concatenate([LONGEST_NAME_IDS, serving_token_ids(model, ["fox"])])
    result.append((images, token_ids, np.asarray(model.classify(images, token_ids))))
    return result


@pytest.fixture(scope="module")
def exports(tmp_path_factory, clip, trained):
    """SavedModels of the trained CoCoOp, a CoOp, a KgCoOp, a MaPLe, a PromptSRC and a zero-shot CLIP."""
    root = tmp_path_factory.mktemp("serving")
    coop = cocoop_tf.CoOp(clip, ["a", "b"])
    coop.prompt_learner.set_context(np.random.default_rng(2).normal(0, 0.02, (4, 64)))
    kgcoop = cocoop_tf.KgCoOp(clip, ["a", "b"], template="a photo of a {}, a type of pet.")
    kgcoop.prompt_learner.set_context(np.random.default_rng(3).normal(0, 0.02, (4, 64)))
    maple = cocoop_tf.MaPLe(clip, ["a", "b"], prompt_depth=2)
    for variable in maple.trainable_variables:  # prompts that change both towers' features
        variable.assign(np.asarray(variable) + np.random.default_rng(4).normal(0, 0.1, variable.shape))
    # Two context vectors ("of a" stays text), vision prompts of their own count and depth.
    promptsrc = cocoop_tf.PromptSRC(clip, ["a", "b"], n_ctx=2, prompt_depth=2, n_ctx_vision=3, vision_prompt_depth=1)
    for variable in promptsrc.trainable_variables:
        variable.assign(np.asarray(variable) + np.random.default_rng(5).normal(0, 0.1, variable.shape))
    models = {
        "cocoop": trained[0],
        "coop": coop,
        "kgcoop": kgcoop,
        "maple": maple,
        "promptsrc": promptsrc,
        "zeroshot": cocoop_tf.ZeroShotCLIP(clip, ["a"], template="a photo of a {}, a type of pet."),
    }
    return {name: (model, export_saved_model(model, root / name)) for name, model in models.items()}


# --- SavedModel, in a process that imports TensorFlow alone -------------------------

TENSORFLOW_ONLY = r'''
import importlib.abc, importlib.machinery, json, sys


class Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes these packages look uninstalled, as they are where TF Serving runs."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("keras", "keras_hub", "keras_nlp", "tensorflow_text", "cocoop_tf"):
            return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        raise ImportError(f"{spec.name} is not available: TF Serving has only TensorFlow")


sys.meta_path.insert(0, Absent())
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

jobs = json.load(open(sys.argv[1]))
arrays = np.load(sys.argv[2])
loaded, sessions, outputs, errors = {}, {}, {}, {}


def run_signature(model, signature, inputs):
    if model not in loaded:
        loaded[model] = tf.saved_model.load(model)
    result = loaded[model].signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in result.items()}


def run_session(model, signature, inputs):
    # TF Serving's C++ runtime feeds the signature's tensors as a callable
    # does, without the Python client's check against the declared shapes.
    if model not in sessions:
        session = tf.compat.v1.Session(graph=tf.Graph())
        with session.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], model)
        sessions[model] = (session, meta)
    session, meta = sessions[model]
    spec = meta.signature_def[signature]
    names = sorted(spec.outputs)
    options = config_pb2.CallableOptions(
        feed=[spec.inputs[k].name for k in inputs], fetch=[spec.outputs[k].name for k in names]
    )
    values = session._make_callable_from_options(options)(*inputs.values())
    return dict(zip(names, values))


for key, job in jobs.items():
    run = run_session if job["session"] else run_signature
    try:
        result = run(job["model"], job["signature"], {k: arrays[v] for k, v in job["inputs"].items()})
    except Exception as error:
        errors[key] = f"{type(error).__name__}: {error}"
    else:
        outputs.update({f"{key}/{name}": value for name, value in result.items()})
np.savez(sys.argv[3], **outputs)
json.dump(
    {"errors": errors, "modules": sorted({m.split(".")[0] for m in sys.modules})},
    open(sys.argv[4], "w"),
)
'''


class TensorFlowOnlyRun:
    """Collects signature calls, runs them all in one TensorFlow-only process."""

    def __init__(self):
        self.jobs, self.arrays = {}, {}

    def add(self, key, model, signature, session=False, **inputs):
        names = {}
        for name, value in inputs.items():
            names[name] = f"{key}/{name}"
            self.arrays[names[name]] = value
        self.jobs[key] = {"model": str(model), "signature": signature, "session": session, "inputs": names}

    def run(self, folder):
        paths = [folder / name for name in ("run.py", "jobs.json", "in.npz", "out.npz", "out.json")]
        paths[0].write_text(TENSORFLOW_ONLY)
        paths[1].write_text(json.dumps(self.jobs))
        np.savez(paths[2], **self.arrays)
        result = subprocess.run(
            [sys.executable, *map(str, paths)], capture_output=True, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(paths[4].read_text())
        with np.load(paths[3]) as outputs:
            return dict(outputs), report["errors"], report["modules"]


def _bad_token_ids(model):
    good = serving_token_ids(model, ["fox", "owl"])
    no_end = good.copy()
    no_end[no_end == 49407] = 320
    no_start = good.copy()
    no_start[:, 0] = 320
    return {
        "longer than the context": np.pad(good, ((0, 0), (0, 1))),
        "name too long": np.array([[49406] + [320] * 72 + [49407] + [0] * 3], np.int32),
        "no end token": no_end,
        "no start token": no_start,
        "empty class set": np.zeros((0, 77), np.int32),
        "one row without the class axis": good[0],
        "a batch of class sets": good[None],
    }


BAD_IMAGES = {
    "33x33 pixels": np.zeros((1, 33, 33, 3), np.float32),
    "4 channels": np.zeros((1, 32, 32, 4), np.float32),
    "1 channel": np.zeros((1, 32, 32, 1), np.float32),
    # Other ranks: TF Serving feeds them; the message names the shapes, not TF's internals.
    "one image without the batch axis": np.zeros((32, 32, 3), np.float32),
    "a batch of batches": np.zeros((1, 2, 32, 32, 3), np.float32),
    "a scalar": np.float32(7.0),
}
BAD_PIXELS = {
    "a NaN pixel": np.where(np.arange(2 * 32 * 32 * 3).reshape(2, 32, 32, 3) == 5000, np.nan, 9.0).astype(np.float32),
    "an infinite pixel": np.full((1, 32, 32, 3), np.inf, np.float32),
    # Finite but far outside 0..255: the graphs answered these with confident probabilities.
    "pixels of -1e6": np.full((2, 32, 32, 3), -1e6, np.float32),
    "pixels of 1e20": np.full((1, 32, 32, 3), 1e20, np.float32),
    "pixels of 3e38": np.full((1, 32, 32, 3), 3e38, np.float32),
    "one pixel of 255.5": np.where(np.arange(32 * 32 * 3).reshape(1, 32, 32, 3) == 7, 255.5, 255.0).astype(np.float32),
}
NO_IMAGES = np.zeros((0, 32, 32, 3), np.float32)


@pytest.fixture(scope="module")
def tensorflow_only(tmp_path_factory, exports, cases):
    run = TensorFlowOnlyRun()
    cocoop, path = exports["cocoop"]
    for i, (images, token_ids, _) in enumerate(cases):
        run.add(f"case{i}", path, "serving_default", images=images, token_ids=token_ids)
        run.add(f"features{i}", path, "image_features", images=images)
    run.add("served like TF Serving", path, "serving_default", session=True,
            images=cases[0][0], token_ids=cases[0][1])
    for name, images in BAD_IMAGES.items():
        run.add(name, path, "serving_default", session=True, images=images, token_ids=cases[0][1])
        run.add(f"signature {name}", path, "serving_default", images=images, token_ids=cases[0][1])
    for name, images in BAD_PIXELS.items():
        run.add(name, path, "serving_default", session=True, images=images, token_ids=cases[0][1])
    run.add("no image", path, "serving_default", session=True, images=NO_IMAGES, token_ids=cases[0][1])
    run.add("no image features", path, "image_features", images=NO_IMAGES)
    edges = np.where(np.arange(3) > 0, 255.0, 0.0) * np.ones((1, 32, 32, 1))
    run.add("edge pixels", path, "serving_default", images=edges.astype(np.float32), token_ids=cases[0][1])
    for name, token_ids in _bad_token_ids(cocoop).items():
        run.add(name, path, "serving_default", images=cases[0][0], token_ids=token_ids)
        run.add(f"served {name}", path, "serving_default", session=True, images=cases[0][0], token_ids=token_ids)
    images = cases[1][0]
    for name in ("coop", "kgcoop", "maple", "promptsrc", "zeroshot"):
        model, path = exports[name]
        token_ids = serving_token_ids(model, NEW_CASES[1][1])
        run.add(name, path, "serving_default", images=images, token_ids=token_ids)
        run.add(f"{name} text", path, "text_features", token_ids=token_ids)
        run.add(f"{name} image", path, "image_features", images=images)
    return run.run(tmp_path_factory.mktemp("tensorflow_only"))


def test_saved_model_runs_with_tensorflow_alone(tensorflow_only):
    _, errors, modules = tensorflow_only
    assert not [m for m in modules if m in ("keras", "keras_hub", "tensorflow_text", "cocoop_tf")]
    assert "case0" not in errors, errors


def test_saved_model_matches_keras_on_new_classes_and_batch_sizes(tensorflow_only, trained, cases):
    outputs, errors, _ = tensorflow_only
    model = trained[0]
    for i, (images, token_ids, expected) in enumerate(cases):
        assert f"case{i}" not in errors, errors
        logits = outputs[f"case{i}/logits"]
        assert logits.shape == (len(images), len(token_ids))
        assert max_relative_difference(logits, expected) <= 1e-4
        np.testing.assert_allclose(outputs[f"case{i}/probabilities"], tf.nn.softmax(expected), atol=1e-5)
        assert max_relative_difference(
            outputs[f"features{i}/image_features"], model.encode_images(images)
        ) <= 1e-4
    assert max_relative_difference(outputs["served like TF Serving/logits"], cases[0][2]) <= 1e-4


def test_coop_kgcoop_maple_promptsrc_and_zero_shot_saved_models_serve_cacheable_class_features(
    tensorflow_only, exports, cases
):
    outputs, errors, _ = tensorflow_only
    images = cases[1][0]
    for name in ("coop", "kgcoop", "maple", "promptsrc", "zeroshot"):
        model, path = exports[name]
        token_ids = serving_token_ids(model, NEW_CASES[1][1])
        expected = np.asarray(model.classify(images, token_ids if name != "zeroshot" else token_ids[:, None]))
        assert max_relative_difference(outputs[f"{name}/logits"], expected) <= 1e-4, name
        # Image features are the model's own (MaPLe's carry its vision prompts).
        image_features = outputs[f"{name} image/image_features"]
        assert max_relative_difference(image_features, model.encode_images(images)) <= 1e-4, name
        # A client that caches text_features and calls classify_features gets the same logits.
        classify = tf.saved_model.load(path).signatures["classify_features"]
        logits = classify(
            image_features=tf.constant(image_features),
            text_features=tf.constant(outputs[f"{name} text/text_features"]),
        )["logits"]
        assert max_relative_difference(logits, expected) <= 1e-4, name
        # Features that are not features get no answer (NaN logits before).
        bad_features = {
            "image_features holds NaN or infinite values": (image_features * np.nan, image_features),
            "text_features must be float32 of shape [rows, 32]": (image_features, image_features[:, :5]),
            "image_features must be float32 of shape [rows, 32] (the outputs of the image_features "
            "signature). Got shape:] [32]": (image_features[0], image_features),
            "text_features is empty": (image_features, image_features[:0]),
        }
        for message, (first, second) in bad_features.items():
            with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
                classify(image_features=tf.constant(first), text_features=tf.constant(second))
    for name in ("maple", "promptsrc"):  # the vision prompts count
        model = exports[name][0]
        assert not np.allclose(model.encode_images(images), model.image_encoder(images), atol=1e-3), name
    # PromptSRC's clients tokenise the words its context leaves as text.
    info = model_info(exports["promptsrc"][0])
    assert (info["prompt"], info["n_ctx"], info["max_end_token_index"]) == ("of a {}.", 2, 74)
    ids = serving_token_ids(exports["promptsrc"][0], ["cup_of_coffee"])
    np.testing.assert_array_equal(ids, cocoop_tf.tokenize(["of a cup of coffee."]))


def test_saved_model_rejects_bad_images(tensorflow_only):
    outputs, errors, _ = tensorflow_only
    message = "images must be RGB pixel values 0..255 of shape [batch, 32, 32, 3]"
    shapes = {"one image without the batch axis": "[32 32 3]", "a batch of batches": "[1 2 32 32 3]",
              "a scalar": "Got shape:] []"}
    for name in BAD_IMAGES:
        # TF Serving feeds any shape: the graph's own check answers, with the shape given.
        assert "InvalidArgumentError" in errors[name] and message in errors[name], errors.get(name)
        assert shapes.get(name, "Got shape:") in errors[name], errors[name]
        assert "Incompatible shapes" not in errors[name] and "out of bounds" not in errors[name]
        # A loaded signature in Python may refuse the declared shape before the graph runs.
        refused = "TensorSpec(shape=(None, 32, 32, 3)" in errors[f"signature {name}"]
        assert refused or message in errors[f"signature {name}"]
    for name in BAD_PIXELS:  # never an answer: not NaN, not confident probabilities
        assert "images must hold finite pixel values in 0..255" in errors.get(name, ""), errors.get(name)
    assert "[6144] [-1e+06] [-1e+06]" in errors["pixels of -1e6"]  # how many, the smallest, the largest
    assert outputs["edge pixels/logits"].shape == (1, 3)  # 0 and 255 themselves are pixel values


def test_saved_model_refuses_an_empty_image_batch(tensorflow_only):
    _, errors, _ = tensorflow_only
    for name in ("no image", "no image features"):
        assert "images holds no image: send a batch of at least one" in errors.get(name, ""), errors.get(name)
        assert "[0 32 32 3]" in errors[name]


def test_saved_model_rejects_bad_token_ids(tensorflow_only):
    _, errors, _ = tensorflow_only
    expected = {
        "longer than the context": "token_ids rows must have 2 to 77 ids",
        "name too long": "A class name is too long: its end token must be at index < 73",
        "no end token": "must contain the end token 49407",
        "no start token": "must start with the start token 49406",
        "empty class set": "token_ids holds no class",
        "one row without the class axis": "token_ids must be int32 of shape [classes, ids] (one row per class "
                                          "name, even for one class). Got shape:] [77]",
        "a batch of class sets": "token_ids must be int32 of shape [classes, ids]",
    }
    for name, message in expected.items():
        for key in (name, f"served {name}"):
            assert "InvalidArgumentError" in errors[key] and message in errors[key], errors.get(key)
            assert "slice index" not in errors[key]


def test_saved_model_cli_shows_the_signatures(exports):
    path = exports["cocoop"][1]
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "show", "--dir", path, "--all"], capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    serving = text[text.index("signature_def['serving_default']"):]
    serving = serving[: serving.index("Method name is")]
    for line in (
        "inputs['images'] tensor_info:",
        "dtype: DT_FLOAT",
        "shape: (-1, 32, 32, 3)",
        "inputs['token_ids'] tensor_info:",
        "dtype: DT_INT32",
        "shape: (-1, -1)",
        "outputs['logits'] tensor_info:",
        "outputs['probabilities'] tensor_info:",
    ):
        assert line in serving, serving
    assert "signature_def['image_features']" in text
    with open(os.path.join(path, "assets.extra", "cocoop_tf.json")) as f:
        info = json.load(f)
    assert info == model_info(exports["cocoop"][0])
    assert info["max_end_token_index"] == 72 and info["prompt"] == "{}."
    # TF Serving's base path holds the version folder and nothing else.
    assert os.listdir(os.path.dirname(path)) == ["1"]


# --- TFLite, in the LiteRT interpreter --------------------------------------------------


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory, trained):
    folder = tmp_path_factory.mktemp("tflite")
    return {
        quantize: export_tflite(trained[0], folder / f"{quantize}.tflite", quantize=quantize)
        for quantize in (None, "dynamic")
    }


def _runner(path, signature="serving_default"):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_runner(signature)


def test_tflite_matches_keras_with_dynamic_batch_and_classes(tflite_models, trained, cases):
    # The interpreter has no Flex delegate: running at all means builtin ops only.
    serve = _runner(tflite_models[None])
    for images, token_ids, expected in cases:
        outputs = serve(images=images, token_ids=token_ids)
        assert max_relative_difference(outputs["logits"], expected) <= 1e-4
        np.testing.assert_allclose(outputs["probabilities"], tf.nn.softmax(expected), atol=1e-5)
    # Clients may cut the zero padding of token_ids.
    images, token_ids, expected = cases[1]
    trimmed = serve(images=images, token_ids=token_ids[:, :12])["logits"]
    assert max_relative_difference(trimmed, expected) <= 1e-4
    features = _runner(tflite_models[None], "image_features")(images=images)["image_features"]
    assert max_relative_difference(features, trained[0].encode_images(images)) <= 1e-4


def test_dynamic_range_quantized_tflite_agrees_on_top1(tflite_models, trained):
    model, images, labels = trained
    token_ids = serving_token_ids(model, list(COLORS))
    expected = np.asarray(model.classify(images, token_ids)).argmax(-1)
    assert np.mean(expected == labels) >= 0.95  # the model did learn the task
    logits = _runner(tflite_models["dynamic"])(images=images, token_ids=token_ids)["logits"]
    assert np.mean(logits.argmax(-1) == expected) >= 0.99
    assert os.path.getsize(tflite_models["dynamic"]) < 0.3 * os.path.getsize(tflite_models[None])


def test_tflite_fails_on_bad_input_then_serves_again(tflite_models, trained, cases):
    # TFLite has no assertions: the graph's checks stop the interpreter (never NaN,
    # never confident probabilities for pixels of 3e38).
    serve = _runner(tflite_models[None])
    images, token_ids, expected = cases[0]
    bad = [{"images": value, "token_ids": token_ids} for value in [*BAD_IMAGES.values(), *BAD_PIXELS.values(), NO_IMAGES]]
    bad += [{"images": images, "token_ids": value} for value in _bad_token_ids(trained[0]).values()]
    for inputs in bad:
        with pytest.raises(RuntimeError):
            serve(**inputs)
    assert max_relative_difference(serve(images=images, token_ids=token_ids)["logits"], expected) <= 1e-4


@pytest.mark.parametrize("name", ["kgcoop", "maple", "promptsrc"])
def test_kgcoop_maple_and_promptsrc_tflite_serve_new_classes(tmp_path, exports, cases, name):
    model = exports[name][0]
    path = export_tflite(model, tmp_path / f"{name}.tflite")
    images = cases[1][0]
    token_ids = serving_token_ids(model, NEW_CASES[1][1])
    logits = _runner(path)(images=images, token_ids=token_ids)["logits"]
    assert max_relative_difference(logits, model.classify(images, token_ids)) <= 1e-4


def test_float16_tflite(tmp_path, trained, cases):
    path = export_tflite(trained[0], tmp_path / "model.tflite", quantize="float16")
    images, token_ids, expected = cases[1]
    assert max_relative_difference(_runner(path)(images=images, token_ids=token_ids)["logits"], expected) <= 1e-2


# --- contract ---------------------------------------------------------------------------


def test_class_specific_coop_serves_only_its_classes(clip):
    model = cocoop_tf.CoOp(clip, ["a", "b", "c"], class_specific=True)
    serve = tf.function(*serving_functions(model)["serving_default"])
    images = np.zeros((1, 32, 32, 3), np.float32)
    logits = serve(images, serving_token_ids(model, ["x", "y", "z"]))["logits"]
    assert max_relative_difference(logits, model.classify(images, model.tokenize_classnames(["x", "y", "z"]))) <= 1e-5
    with pytest.raises(tf.errors.InvalidArgumentError, match="one context per class for 3 classes"):
        serve(images, serving_token_ids(model, ["x", "y"]))


def test_zero_shot_takes_one_template(clip, tmp_path):
    model = cocoop_tf.ZeroShotCLIP(clip, ["cat"], template=["a photo of a {}.", "art of a {}."])
    with pytest.raises(ValueError, match="ensembles 2 templates"):
        export_saved_model(model, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # nothing written for a refused model
    single = cocoop_tf.ZeroShotCLIP(clip, ["cat"], template="art of a {}.")
    assert (serving_token_ids(single, ["cat"]) == cocoop_tf.tokenize(["art of a cat."])).all()


def test_an_existing_version_is_not_overwritten(tmp_path, clip):
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "saved_model.pb").write_bytes(b"")
    model = cocoop_tf.CoOp(clip, ["a"])
    with pytest.raises(FileExistsError, match="Pick a new version"):
        export_saved_model(model, tmp_path, version=3)
    with pytest.raises(ValueError, match="positive integer"):
        export_saved_model(model, tmp_path, version=0)
    export_saved_model(model, tmp_path, version=3, overwrite=True)
    assert "serving_default" in tf.saved_model.load(str(tmp_path / "3")).signatures
