"""Prompt files and .keras files as hostile input, through `cocoop-tf evaluate --prompts` and `export --model`.

Each bad file is refused with one line that names it and what is wrong, before
anything of the size it declares is allocated (every case runs under
`memory_limit`), and nothing in a file runs as code.
"""

import json
import os
import signal
import struct
import subprocess
import zipfile

import keras
import numpy as np
import pytest
from conftest import memory_limit
from safetensors.numpy import load_file
from safetensors.numpy import save_file
from test_data_helpers import write_class_folders

import cocoop_tf
from cocoop_tf.cli import main
from cocoop_tf.clip.backbone import fingerprint
from cocoop_tf.models import read_prompt


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    """Prompt files of five methods on random_tiny (the weights `--backbone random_tiny` loads)."""
    folder = tmp_path_factory.mktemp("prompts")
    clip = cocoop_tf.load_clip("random_tiny", seed=0)
    cocoop_tf.CoCoOp(clip, ["cat", "dog"], reduction=4).save_prompt(folder / "cocoop.safetensors")
    cocoop_tf.CoOp(clip, ["cat", "dog"], class_specific=True).save_prompt(folder / "csc.safetensors")
    cocoop_tf.MaPLe(clip, ["cat", "dog"], prompt_depth=2).save_prompt(folder / "maple.safetensors")
    cocoop_tf.IVLP(clip, ["cat", "dog"], prompt_depth=2, n_ctx_vision=3, vision_prompt_depth=1).save_prompt(
        folder / "ivlp.safetensors"
    )
    cocoop_tf.PromptSRC(clip, ["cat", "dog"], n_ctx=2, prompt_depth=2, gpa_mean=2.0).save_prompt(
        folder / "promptsrc.safetensors"
    )
    write_class_folders(folder / "images", {"cat": 2, "dog": 2})
    return folder


def _edited(source, target, config=None, metadata=None, tensors=None):
    """A copy of a prompt file with settings of its config, metadata or tensors replaced."""
    _, recorded = read_prompt(source)
    recorded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in recorded.items() if k != "classnames"}
    recorded["config"] = json.dumps({**json.loads(recorded["config"]), **(config or {})})
    recorded.update(metadata or {})
    values = load_file(str(source))
    save_file(tensors(values) if tensors else values, str(target), metadata=recorded)
    return target


def _rewritten(source, target, header=None, data=None, raw=None):
    """A copy of a safetensors file with its header (a dict) or raw bytes replaced."""
    content = source.read_bytes()
    (length,) = struct.unpack("<Q", content[:8])
    if raw is not None:
        content = raw(content, length)
    else:
        old = json.loads(content[8 : 8 + length])
        text = json.dumps(header(old) if header else old).encode()
        content = struct.pack("<Q", len(text)) + text + (data if data is not None else content[8 + length :])
    target.write_bytes(content)
    return target


class _Hung(BaseException):
    """Raised by the watchdog; not an Exception, so that the command cannot report it as its error."""


def _command(capsys, *args):
    """Runs `cocoop-tf ARGS` in this process under a memory cap and a watchdog; (exit code, stderr)."""

    def hung(signum, frame):
        raise _Hung(f"cocoop-tf {' '.join(map(str, args))} still runs after 60 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        with memory_limit():
            code = main([str(a) for a in args])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, capsys.readouterr().err


def _export(capsys, path, *extra):
    out = path.parent / f"export_of_{path.stem}"
    code, error = _command(
        capsys, "export", "--model", path, "--backbone", "random_tiny", "--format", "saved_model",
        "--output", out, *extra,
    )
    assert not out.exists()
    return code, error


def _evaluate(capsys, folder, path):
    out = folder / f"evaluate_{os.path.basename(path)}"
    code, error = _command(
        capsys, "evaluate", "--dataset", folder / "images", "--backbone", "random_tiny",
        "--prompts", path, "--output", out,
    )
    assert not out.exists()
    return code, error


def _one_line(code, error, *needles):
    assert code == 2 and error.count("\n") == 1, error
    assert "unexpected" not in error and "Traceback" not in error, error
    for needle in needles:
        assert needle in error, error


# --- settings that would build huge models, or fail deep inside ------------------------

SETTINGS = {
    # 20 million context vectors: 5 GB before any check, as the file was read until now.
    "n_ctx": ("cocoop", dict(config={"n_ctx": 20_000_000, "ctx_init": None}),
              "its config says n_ctx=20000000 but its context prompt_learner/ctx holds 4 vectors"),
    "ctx_init": ("cocoop", dict(config={"n_ctx": None, "ctx_init": "a " * 5_000_000}),
                 "ctx_init (--ctx-init) 'a a a"),
    "n_ctx_text": ("cocoop", dict(config={"n_ctx": "4"}), "its config says n_ctx='4'"),
    "classes_of_csc": ("csc", dict(config={"classnames": [f"c{i}" for i in range(1_000_000)]}),
                       "learned one context per class for 2 classes but names 1000000 classes"),
    "classnames_type": ("cocoop", dict(config={"classnames": 5}), "its class names are 5, not a list"),
    "maple_n_ctx": ("maple", dict(config={"n_ctx": 20_000_000}),
                    "n_ctx=20000000 but its context prompt_learner/ctx has shape (2, 64)"),
    "maple_depth": ("maple", dict(config={"prompt_depth": 10**9}), "prompt_depth is 1000000000"),
    # A billion vision blocks, or as many vision vectors: refused by the tensors' shapes.
    "ivlp_vision_depth": ("ivlp", dict(config={"vision_prompt_depth": 10**9}),
                          "vision_prompt_depth=1000000000, so prompt_learner/deep_vision_ctx should have shape "
                          "(999999999, 3, 'width'), but it is missing"),
    "ivlp_vision_vectors": ("ivlp", dict(config={"n_ctx_vision": 10**9}),
                            "so prompt_learner/vision_ctx should have shape (1000000000, 'width')"),
    "promptsrc_weight": ("promptsrc", dict(config={"text_loss_weight": float("nan")}),
                         "text_loss_weight (--text-loss-weight) must be a finite number >= 0"),
    "reduction_zero": ("cocoop", dict(config={"reduction": 0}), "reduction (--reduction) must be a whole number"),
    # A CoCoOp config under the name CoOp: Keras said "Unrecognized keyword arguments".
    "other_method": ("cocoop", dict(metadata={"method": "CoOp"}),
                     "holds a CoOp prompt whose config has reduction=4: a setting of CoCoOp, not of CoOp"),
    # A Keras object's config where a setting goes: refused, never deserialised.
    "keras_object": ("cocoop", dict(config={"dtype": {"module": "os", "class_name": "system", "config": {}}}),
                     "config has dtype={'module': 'os'"),
    "integer_tensors": ("cocoop", dict(tensors=lambda t: {k: (v * 100).astype(np.int32) for k, v in t.items()}),
                        "holds 'I32' values; a prompt's learned weights are floating point"),
    "training": ("cocoop", dict(metadata={"training": "[1, 2]"}), "its 'training' metadata is [1, 2], not a JSON object"),
}


@pytest.mark.parametrize("case", list(SETTINGS))
def test_hostile_settings_are_refused_before_anything_is_built(prompts, capsys, case):
    source, edits, message = SETTINGS[case]
    path = _edited(prompts / f"{source}.safetensors", prompts / f"{case}.safetensors", **edits)
    _one_line(*_export(capsys, path), f"{path}'", message)


def test_a_prompt_of_another_method_names_the_flag_to_use(prompts, capsys):
    _one_line(
        *_export(capsys, prompts / "cocoop.safetensors", "--method", "coop"),
        "holds a CoCoOp prompt, not a CoOp one", "--method cocoop, or no --method",
    )
    # IVLP and PromptSRC prompts hold the same tensors: the method recorded decides.
    _one_line(
        *_export(capsys, prompts / "ivlp.safetensors", "--method", "promptsrc"),
        "holds an IVLP prompt, not a PromptSRC one: load it with IVLP.from_prompt", "--method ivlp, or no --method",
    )
    _one_line(
        *_export(capsys, prompts / "promptsrc.safetensors", "--method", "ivlp"),
        "holds a PromptSRC prompt, not an IVLP one", "--method promptsrc, or no --method",
    )


def test_a_prompt_on_another_backbone_names_both_before_any_vocabulary_check(prompts, capsys):
    """The refusal names the backbone the file records (its source and fingerprint) and the one
    given, before the given backbone's vocabulary or widths can fail the build."""
    path = prompts / "cocoop.safetensors"
    trained_on = read_prompt(path)[1]
    assert trained_on["backbone_source"] == "random_tiny"
    # Of the same widths, other weights, and a vocabulary without these words (as the demo's CLIP).
    other = cocoop_tf.load_clip("random_tiny", seed=1)
    other.known_token_ids = frozenset({49406, 49407, 320})
    with pytest.raises(ValueError) as refused:
        cocoop_tf.CoCoOp.from_prompt(other, path, classnames=["xylophone"])
    message = str(refused.value)
    assert "\n" not in message and "knows only" not in message, message
    assert (
        f"was trained on another backbone (random_tiny, weights fingerprint {trained_on['backbone']}) than "
        f"this one (random_tiny, weights fingerprint {fingerprint(other)})" in message
    ), message
    assert "(--backbone random_tiny), or pass force=True" in message, message
    # On the command line, a backbone of other widths (and vocabulary): one line naming both.
    code, error = _command(
        capsys, "evaluate", "--dataset", prompts / "images", "--backbone", "mini_clip", "--prompts", path,
        "--output", prompts / "evaluate_on_mini_clip",
    )
    _one_line(
        code, error, f"trained on another backbone (random_tiny, weights fingerprint {trained_on['backbone']}) "
        "than this one (mini_clip, weights fingerprint", "its ctx_dim is 64 but this model's is 128",
        "Load it on the backbone it was trained on (--backbone random_tiny)",
    )
    # A file written before backbone_source: named by its fingerprint alone.
    _, recorded = read_prompt(path)
    recorded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in recorded.items()
                if k not in ("classnames", "backbone_source")}
    save_file(load_file(str(path)), str(prompts / "unnamed.safetensors"), metadata=recorded)
    with pytest.raises(ValueError, match=rf"trained on another backbone \(weights fingerprint {trained_on['backbone']}\) "
                       r"than this one \(random_tiny, weights fingerprint [0-9a-f]{16}\)"):
        cocoop_tf.CoCoOp.from_prompt(other, prompts / "unnamed.safetensors")


def test_ivlp_and_promptsrc_prompts_are_evaluated_and_exported_as_saved(prompts, capsys):
    """`evaluate --prompts` and `export --model` build each method with the settings its file
    records (IVLP's export is PromptSRC's: the same loader and serving code)."""
    import tensorflow as tf

    from cocoop_tf.export import serving_token_ids

    clip = cocoop_tf.load_clip("random_tiny", seed=0)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    path = prompts / "promptsrc.safetensors"
    saved = cocoop_tf.PromptSRC.from_prompt(clip, path)
    out = prompts / "exported_promptsrc"
    code, error = _command(capsys, "export", "--model", path, "--backbone", "random_tiny",
                           "--format", "saved_model", "--output", out)
    assert code == 0, error
    served = tf.saved_model.load(str(out / "1")).signatures["serving_default"]
    token_ids = serving_token_ids(saved, ["fox", "owl", "cup_of_coffee"])
    logits = served(images=tf.constant(images), token_ids=tf.constant(token_ids))["logits"]
    np.testing.assert_allclose(logits, saved.classify(images, token_ids), rtol=1e-4, atol=1e-4)
    _, metadata = read_prompt(prompts / "promptsrc.safetensors")
    assert {k: metadata["config"][k] for k in ("n_ctx", "prompt_depth", "n_ctx_vision", "vision_prompt_depth",
                                               "gpa_mean")} == {
        "n_ctx": 2, "prompt_depth": 2, "n_ctx_vision": 4, "vision_prompt_depth": 2, "gpa_mean": 2.0}
    assert cocoop_tf.PromptSRC.from_prompt(clip, prompts / "promptsrc.safetensors").fixed_words == "of a"
    out = prompts / "evaluated"
    code, error = _command(capsys, "evaluate", "--dataset", prompts / "images", "--backbone", "random_tiny",
                           "--prompts", prompts / "ivlp.safetensors", prompts / "promptsrc.safetensors",
                           "--output", out)
    assert code == 0, error
    table = (out / "results.md").read_text()
    assert ("IVLP prompt `" in table and "| IVLP |" in table and "| PromptSRC |" in table
            and "PromptSRC prompt `" in table)


# --- damaged files -------------------------------------------------------------------

DAMAGE = {
    "truncated": (dict(raw=lambda c, n: c[:-10]), "its tensors declare 4384 bytes of data but the file holds 4374"),
    "header_past_the_file": (dict(raw=lambda c, n: struct.pack("<Q", len(c)) + c[8:]),
                             "its header declares"),
    "header_of_2_to_the_63": (dict(raw=lambda c, n: struct.pack("<Q", 2**63) + c[8:]), "its header declares"),
    "header_not_json": (dict(raw=lambda c, n: c[:8] + b"{" * n + c[8 + n :]), "its header is not valid JSON"),
    "empty": (dict(raw=lambda c, n: b""), "it is 0 bytes, too short"),
    # A tensor whose declared shape runs past its bytes, or whose bytes overlap another's.
    "shape_past_data": (dict(header=lambda h: {**h, "prompt_learner/ctx": {
        **h["prompt_learner/ctx"], "shape": [4, 64_000_000]}}), "does not fit its data offsets"),
    "overlapping": (dict(header=lambda h: {**h, "meta_net/linear1/bias": {
        **h["meta_net/linear1/bias"], "data_offsets": [0, 32], "dtype": "F32"},
        "meta_net/linear2/bias": {**h["meta_net/linear2/bias"], "data_offsets": [0, 256]}}),
        "does not fit its data offsets"),
    "zero_size_huge_shape": (dict(header=lambda h: {**h, "prompt_learner/ctx": {
        **h["prompt_learner/ctx"], "shape": [0, 40_000_000]}}), "does not fit its data offsets"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_files_are_one_line_errors(prompts, capsys, case):
    edits, message = DAMAGE[case]
    path = _rewritten(prompts / "cocoop.safetensors", prompts / f"{case}.safetensors", **edits)
    _one_line(*_evaluate(capsys, prompts, path), f"{path}' is not a readable prompt checkpoint", message)


def _unblock(fifo, after):
    """A process that opens and closes `fifo` for writing after `after` seconds.

    A reader blocked in opening the pipe (in C, holding the interpreter: no
    signal handler or thread of this process runs) then reads end of file
    instead of waiting forever.
    """
    return subprocess.Popen(["sh", "-c", f"sleep {after} && : > '{fifo}'"])


def test_not_a_regular_file_is_refused_unopened(prompts, capsys, tmp_path):
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    unblock = _unblock(fifo, after=10)
    try:
        _one_line(*_evaluate(capsys, prompts, fifo), f"{fifo}' is a named pipe (FIFO), not a regular file")
        assert unblock.poll() is None  # refused at once, not once the writer came
    finally:
        unblock.kill()
        unblock.wait()
    zero = tmp_path / "zero.safetensors"
    zero.symlink_to("/dev/zero")  # reading it would never end
    _one_line(*_evaluate(capsys, prompts, zero), "is a device, not a regular file")
    loop = tmp_path / "loop.safetensors"
    loop.symlink_to(loop)
    _one_line(*_evaluate(capsys, prompts, loop), f"{loop}' is a symlink loop")
    dangling = tmp_path / "dangling.safetensors"
    dangling.symlink_to(tmp_path / "gone.safetensors")
    _one_line(*_evaluate(capsys, prompts, dangling), "not found", "symlink to a missing file")
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    _one_line(*_evaluate(capsys, prompts, folder), "is a folder, not a regular file")
    # What `export --model` takes is refused the same way, not reported as missing.
    _one_line(*_export(capsys, loop), f"{loop}' is a symlink loop")
    _one_line(*_export(capsys, zero), "is a device, not a regular file")
    _one_line(*_export(capsys, folder), "is a folder, not a regular file")
    link = tmp_path / "link.safetensors"
    link.symlink_to(prompts / "cocoop.safetensors")  # a link to a prompt file is that file
    assert read_prompt(link)[1]["method"] == "CoCoOp"


def test_the_reader_gives_what_safetensors_wrote(prompts):
    for name in ("cocoop", "csc", "maple"):
        tensors, metadata = read_prompt(prompts / f"{name}.safetensors")
        expected = load_file(str(prompts / f"{name}.safetensors"))
        assert tensors.keys() == expected.keys()
        for key, value in expected.items():
            assert tensors[key].dtype == value.dtype and tensors[key].flags.writeable
            np.testing.assert_array_equal(tensors[key], value)
    half = prompts / "half.safetensors"
    save_file({"x": np.arange(3, dtype=np.float16), "y": np.ones((0, 2), np.float64)}, str(half),
              metadata={"format": "cocoop_tf.prompt/2", "method": "CoOp", "config": '{"classnames": ["a"]}',
                        "backbone_widths": "{}"})
    tensors, _ = read_prompt(half)
    np.testing.assert_array_equal(tensors["x"], [0, 1, 2])
    assert tensors["x"].dtype == np.float16 and tensors["y"].shape == (0, 2)


# --- .keras files: nothing in them runs -----------------------------------------------


def test_code_in_a_keras_file_is_refused_and_never_runs(tmp_path, capsys):
    planted = tmp_path / "planted"
    inputs = keras.Input((2,))
    # A Lambda's function travels as Python bytecode; safe mode refuses to load it. This one
    # writes a file when it runs, as it did once here, when the model was built.
    writes = eval(f"lambda x: x + len(open({str(planted)!r}, 'w').name)")
    model = keras.Model(inputs, keras.layers.Lambda(writes)(inputs))
    planted.unlink()
    model.save(tmp_path / "lambda.keras")
    code, error = _command(capsys, "export", "--model", tmp_path / "lambda.keras", "--format", "saved_model",
                           "--output", tmp_path / "out")
    _one_line(code, error, "Lambda")
    # A config naming any module's function (os.system) where a layer goes.
    with zipfile.ZipFile(tmp_path / "lambda.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["config.json"] = json.dumps(
        {"module": "os", "class_name": "system", "config": {"command": f"touch {planted}"}, "registered_name": None}
    )
    with zipfile.ZipFile(tmp_path / "system.keras", "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    code, error = _command(capsys, "export", "--model", tmp_path / "system.keras", "--format", "saved_model",
                           "--output", tmp_path / "out")
    _one_line(code, error, "system.keras")
    assert not planted.exists() and not (tmp_path / "out").exists()
