"""Exports that are killed or replaced while a server reads them.

TF Serving loads `OUTPUT/<version>/` folders as they appear and serves one
until it is replaced: an export must never leave a version half written, and
a killed export must leave nothing behind once the next one has run.
"""

import json
import os
import select
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cocoop_tf
from cocoop_tf.cli import main
from cocoop_tf.export import export_saved_model
from cocoop_tf.export import staging

# Stops the export just before the new version is put in place (whatever call
# does it), so that the test can kill it at the worst moment.
PAUSED_EXPORT = r'''
import os, sys, time

import cocoop_tf.export.staging as staging
from cocoop_tf.cli import main

output, prompt = sys.argv[1], sys.argv[2]
version = os.path.abspath(os.path.join(output, "1"))


def pause_before(function):
    def paused(*args, **kwargs):
        if len(args) > 1 and os.path.abspath(os.fspath(args[1])) == version:
            print("about to put the new version in place", flush=True)
            time.sleep(600)
        return function(*args, **kwargs)
    return paused


os.rename = pause_before(os.rename)
os.replace = pause_before(os.replace)
staging._exchange = pause_before(staging._exchange)
main(["export", "--model", prompt, "--backbone", "random_tiny", "--format", "saved_model",
      "--output", output, "--overwrite"])
'''


@pytest.fixture(scope="module")
def clip():
    return cocoop_tf.load_clip("random_tiny")


def _coop(clip, name):
    model = cocoop_tf.CoOp(clip, [name])
    model.prompt_learner.set_context(np.random.default_rng(len(name)).normal(0, 0.02, (4, 64)))
    return model


def _classnames(version):
    """The training classes recorded in a version folder: which model it holds."""
    with open(os.path.join(version, "assets.extra", "cocoop_tf.json")) as f:
        return json.load(f)["classnames"]


def _serves(version):
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    images = np.full((1, 32, 32, 3), 128, np.float32)
    token_ids = cocoop_tf.tokenize_classnames(["cat", "dog"])
    return signature(images=images, token_ids=token_ids)["probabilities"].shape == (1, 2)


def _read_line(stream, timeout):
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def test_an_overwrite_killed_at_the_worst_moment_leaves_the_version_whole(tmp_path, clip, capsys):
    serving = tmp_path / "serving"
    export_saved_model(_coop(clip, "old"), serving)
    _coop(clip, "new").save_prompt(tmp_path / "new.safetensors")
    (tmp_path / "paused_export.py").write_text(PAUSED_EXPORT)
    with open(tmp_path / "stderr.txt", "w") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(tmp_path / "paused_export.py"), str(serving), str(tmp_path / "new.safetensors")],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
        )
        try:
            line = _read_line(child.stdout, timeout=300)
        finally:
            child.kill()  # SIGKILL: no clean-up runs
            child.wait()
            child.stdout.close()
    assert "about to put the new version in place" in line, (tmp_path / "stderr.txt").read_text()[-3000:]
    # The old model is still served, whole; the new one waits in a staging folder.
    assert _classnames(serving / "1") == ["old"] and _serves(serving / "1")
    left = sorted(os.listdir(serving))  # "." sorts before "1"
    assert len(left) == 2 and left[0].startswith(staging.PREFIX) and left[1] == "1", left
    # The next export replaces the version and removes what the killed one left.
    assert main(["export", "--model", str(tmp_path / "new.safetensors"), "--backbone", "random_tiny",
                 "--format", "saved_model", "--output", str(serving), "--overwrite"]) == 0
    assert f"Exported CoOp to {serving / '1'}" in capsys.readouterr().out
    assert os.listdir(serving) == ["1"]
    assert _classnames(serving / "1") == ["new"]


def test_without_a_swap_a_version_moved_aside_comes_back(tmp_path, clip, monkeypatch):
    serving = tmp_path / "serving"
    # What an export killed between its two renames leaves on a file system
    # that cannot swap folders: version 1 moved into its staging folder.
    aside = serving / f"{staging.PREFIX}killed"
    (aside / staging.OLD).mkdir(parents=True)
    (aside / staging.OLD / "saved_model.pb").write_bytes(b"version 1")
    (aside / staging.TARGET_FILE).write_text("1")
    (serving / "2").mkdir()
    (serving / "2" / "saved_model.pb").write_bytes(b"version 2")
    # The next export puts it back; replacing a version there still works,
    # with a warning about the moment it is missing.
    monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    with pytest.warns(UserWarning, match="cannot swap folders in one step"):
        export_saved_model(_coop(clip, "new"), serving, version=2, overwrite=True)
    assert sorted(os.listdir(serving)) == ["1", "2"]
    assert (serving / "1" / "saved_model.pb").read_bytes() == b"version 1"
    assert _classnames(serving / "2") == ["new"]


def test_a_staging_folder_removed_as_stale_before_its_lock_is_made_again(tmp_path, monkeypatch):
    # Another export's clean-up may remove a new staging folder between its
    # mkdtemp and its lock: the export must not write into a deleted folder.
    made = []
    mkdtemp = staging.tempfile.mkdtemp

    def racing_mkdtemp(**kwargs):
        path = mkdtemp(**kwargs)
        made.append(path)
        if len(made) == 1:
            staging.remove_stale(kwargs["dir"])  # unlocked yet: taken for stale
        return path

    monkeypatch.setattr(staging.tempfile, "mkdtemp", racing_mkdtemp)
    with staging.staging_folder(tmp_path, "1") as path:
        assert path == made[1] and os.path.isdir(path)
        assert (tmp_path / os.path.basename(path) / staging.TARGET_FILE).read_text() == "1"
    assert os.listdir(tmp_path) == []
