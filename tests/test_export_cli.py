"""`cocoop-tf export`, run as users run it."""

import fcntl
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import cocoop_tf
from cocoop_tf.export import serving_token_ids
from cocoop_tf.export import staging
from conftest import max_relative_difference


def _export(*args):
    return subprocess.run(
        ["cocoop-tf", "export", *args], capture_output=True, text=True,
        preexec_fn=lambda: os.umask(0o022),
    )


@pytest.fixture(scope="module")
def clip():
    return cocoop_tf.load_clip("random_tiny")


def test_prompt_checkpoint_to_saved_model(tmp_path, clip):
    model = cocoop_tf.CoOp(clip, ["red", "green"])
    model.prompt_learner.set_context(np.random.default_rng(0).normal(0, 0.02, (4, 64)))
    model.save_prompt(tmp_path / "prompt.safetensors")
    result = _export(
        "--model", str(tmp_path / "prompt.safetensors"), "--backbone", "random_tiny",
        "--format", "saved_model", "--output", str(tmp_path / "serving"), "--version", "7",
    )
    assert result.returncode == 0, result.stderr
    assert f"Exported CoOp to {tmp_path / 'serving' / '7'}" in result.stdout
    # Readable by a TF Serving process of another user: the umask's permissions.
    assert oct((tmp_path / "serving" / "7").stat().st_mode & 0o777) == "0o755"
    assert oct((tmp_path / "serving" / "7" / "saved_model.pb").stat().st_mode & 0o777) == "0o644"
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    token_ids = serving_token_ids(model, ["a blue fish", "sky"])
    served = tf.saved_model.load(str(tmp_path / "serving" / "7")).signatures["serving_default"]
    logits = served(images=images, token_ids=token_ids)["logits"]
    assert max_relative_difference(logits, model.classify(images, token_ids)) <= 1e-4


def test_keras_file_to_quantized_tflite(tmp_path, clip):
    import ai_edge_litert.interpreter as litert
    model = cocoop_tf.CoCoOp(clip, ["red", "green"])
    model(np.zeros((1, 32, 32, 3), np.float32))  # built, as after training
    model.save(tmp_path / "model.keras")
    output = tmp_path / "model.tflite"
    output.write_bytes(b"an earlier export")
    arguments = ["--model", str(tmp_path / "model.keras"), "--format", "tflite", "--output", str(output),
                 "--quantize", "float16"]
    refused = _export(*arguments)
    assert refused.returncode == 2 and output.read_bytes() == b"an earlier export"
    assert refused.stderr.strip().splitlines() == [
        f"cocoop-tf export: error: {str(output)!r} exists; pass --overwrite to replace it."
    ]
    # A killed export's staging folder (its intermediate SavedModel, half a file) is
    # removed by the next export; another export still writing (it holds its
    # folder's lock) is left alone.
    killed = tmp_path / f"{staging.PREFIX}killed"
    (killed / "saved_model" / "variables").mkdir(parents=True)
    (killed / "model.tflite").write_bytes(b"half a flatbuffer")
    (killed / staging.TARGET_FILE).write_text("model.tflite")
    running = tmp_path / f"{staging.PREFIX}running"
    running.mkdir()
    lock = os.open(running, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        result = _export(*arguments, "--overwrite")
    finally:
        os.close(lock)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == sorted([running.name, "model.keras", "model.tflite"])
    assert output.read_bytes()[4:8] == b"TFL3"  # a whole flatbuffer replaced the old file
    assert oct(output.stat().st_mode & 0o777) == "0o644"
    images = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    token_ids = serving_token_ids(model, ["cat", "dog", "owl", "fox"])
    runner = litert.Interpreter(model_path=str(output)).get_signature_runner("serving_default")
    logits = runner(images=images, token_ids=token_ids)["logits"]
    assert max_relative_difference(logits, model.classify(images, token_ids)) <= 1e-2


def test_prompt_checkpoint_without_backbone_is_a_one_line_error(tmp_path, clip):
    cocoop_tf.CoCoOp(clip, ["red"]).save_prompt(tmp_path / "prompt.safetensors")
    result = _export(
        "--model", str(tmp_path / "prompt.safetensors"), "--format", "tflite",
        "--output", str(tmp_path / "m.tflite"),
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "--backbone" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_functional_graph_is_refused_with_how_to_export_it(tmp_path, clip, capsys):
    """A user's keras.Model around our classifier: refused in one line that names Keras' own export
    and ours of the classifier it holds."""
    import keras

    from cocoop_tf.cli import main

    images = keras.Input((32, 32, 3))
    graph = keras.Model(images, keras.layers.Softmax()(cocoop_tf.CoOp(clip, ["red", "green"], name="coop")(images)))
    graph.save(tmp_path / "graph.keras")
    code = main(["export", "--model", str(tmp_path / "graph.keras"), "--format", "saved_model",
                 "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and "Traceback" not in error, error
    assert "holds a Functional model, not a classifier of a registered method" in error, error
    assert 'keras.saving.load_model(PATH).export(OUTPUT, format="tf_saved_model")' in error, error
    assert "cocoop_tf.export.export_saved_model(model.get_layer('coop'), OUTPUT)" in error, error
    assert not (tmp_path / "out").exists()
