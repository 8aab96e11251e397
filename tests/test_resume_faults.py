"""`--resume` never mixes two runs, and faults (a full disk, signals, odd files) cost nothing.

One small run (CoOp, one seed, two epochs, random_tiny) is
trained once; each test damages a copy of its folder or data the way a user,
a disk or a signal would, and resumes it through the command line.
"""

import builtins
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import memory_limit
from conftest import user_environment
from protocol_fixtures import write_coop_data_root
from safetensors.numpy import load_file

from cocoop_tf.cli import main
from cocoop_tf.files import is_staging

TESTS = os.path.dirname(os.path.abspath(__file__))


def train_args(data_root, output, *extra):
    return ["train", "--dataset", "oxford_pets", "--data-root", str(data_root), "--backbone", "random_tiny",
            "--methods", "coop", "--seeds", "1", "--shots", "1", "--epochs", "2",
            "--warmup-epochs", "0", "--eval-batch-size", "8", "--output", str(output), *extra]


def cli(capsys, args):
    """`cocoop-tf ARGS` in this process: (exit code, stdout, stderr)."""
    showwarning = warnings.showwarning  # main replaces it
    try:
        code = main([str(a) for a in args])
    finally:
        warnings.showwarning = showwarning
    out, err = capsys.readouterr()
    return code, out, err


def results(folder):
    return json.loads((folder / "results.json").read_text())


def predictions(folder):
    return {str(p.relative_to(folder)): dict(np.load(p)) for p in sorted(folder.glob("runs/*/predictions/*.npz"))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(data root, finished run folder) of a `train` run of CoOp."""
    root = tmp_path_factory.mktemp("finished")
    data = write_coop_data_root(str(root / "data"))
    showwarning = warnings.showwarning
    try:
        assert main(train_args(data, root / "run")) == 0
    finally:
        warnings.showwarning = showwarning
    return data, root / "run"


@pytest.fixture
def copy(finished, tmp_path):
    """A copy of the finished run folder."""
    shutil.copytree(finished[1], tmp_path / "run")
    return tmp_path / "run"


def unevaluated(folder):
    """The folder as a run killed after training leaves it: no results, no predictions."""
    for path in [*folder.glob("runs/*/result.json"), *folder.glob("results.*")]:
        path.unlink()
    for path in folder.glob("runs/*/predictions"):
        shutil.rmtree(path)
    return folder


def assert_same_results(folder, finished):
    assert results(folder)["runs"] == results(finished)["runs"]
    same, whole = predictions(folder), predictions(finished)
    assert same.keys() == whole.keys() and len(same) == 1
    for name in whole:
        for key in whole[name]:
            np.testing.assert_array_equal(same[name][key], whole[name][key], err_msg=f"{name} {key}")


def assert_whole_files(folder):
    """No staging file, no empty file, and every results file readable."""
    from cocoop_tf.protocols import load_predictions

    for where, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(where, name)
            assert not is_staging(name), path
            if name != ".lock":
                assert os.path.getsize(path) > 0, path
            if name.endswith(".npz"):
                load_predictions(path)
            if name.endswith(".json"):
                json.loads(open(path).read())
            if name.endswith(".png"):
                assert open(path, "rb").read()[-8:] == b"IEND\xaeB`\x82", path


# --- what identifies a run ------------------------------------------------------------


def test_resume_on_other_data_is_refused_the_same_data_moved_is_not(finished, copy, tmp_path, capsys):
    data, _ = finished
    moved = shutil.copytree(data, tmp_path / "moved")
    code, out, err = cli(capsys, train_args(moved, copy, "--resume"))
    assert code == 0, err
    assert out.count("done before, kept") == 1

    other = shutil.copytree(data, tmp_path / "other")
    split_file = other / "oxford_pets" / "split_zhou_OxfordPets.json"
    split = json.loads(split_file.read_text())
    split["test"] = split["test"][:-1]  # another version of the data set
    split_file.write_text(json.dumps(split))
    before = (copy / "results.json").read_bytes()
    code, out, err = cli(capsys, train_args(other, copy, "--resume"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "holds another run (different data.oxford_pets; the data: its class names and the images" in err
    assert (copy / "results.json").read_bytes() == before


def test_a_lost_run_json_lends_no_results_to_other_settings_and_a_misshapen_result_is_redone(
    finished, copy, capsys
):
    (copy / "run.json").write_text("")
    code, out, err = cli(capsys, train_args(finished[0], copy, "--resume", "--shots", 2, "--lr", 0.01, "--epochs", 3))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert ("runs/coop_seed1/result.json in " in err and "was made with other settings than this command's "
            "(different config.epochs, config.lr, config.shots)" in err)
    assert (copy / "run.json").read_text() == ""  # not claimed for these settings
    # Valid JSON of another shape (no settings, accuracy not numbers): the checkpoints'
    # own records decide, and the result is evaluated again.
    result = copy / "runs" / "coop_seed1" / "result.json"
    done = json.loads(result.read_text())
    result.write_text(json.dumps({**{k: v for k, v in done.items() if k != "settings"}, "accuracy": "high"}))
    code, out, err = cli(capsys, train_args(finished[0], copy, "--resume", "--lr", "0.01"))
    assert code == 2 and "runs/coop_seed1/checkpoints/epoch_001.safetensors" in err and "(different lr)" in err
    # The settings the run was started with continue it.
    code, out, err = cli(capsys, train_args(finished[0], copy, "--resume"))
    assert code == 0, err
    assert "run.json was damaged; written again" in out and "resumed after epoch 2" in out
    assert "result.json is damaged; evaluating this run again" in out
    assert_same_results(copy, finished[1])


def test_evaluate_resume_after_the_prompt_file_changed(finished, tmp_path, capsys):
    data, run = finished
    prompt = tmp_path / "prompt.safetensors"
    shutil.copy(run / "runs" / "coop_seed1" / "prompt.safetensors", prompt)
    evaluate = ["evaluate", "--dataset", "oxford_pets", "--data-root", data, "--backbone", "random_tiny",
                "--prompts", prompt, "--eval-batch-size", 8]
    assert cli(capsys, [*evaluate, "--output", tmp_path / "old"])[0] == 0
    old_settings = (tmp_path / "old" / "run.json").read_text()
    shutil.copy(run / "runs" / "coop_seed1" / "checkpoints" / "epoch_001.safetensors", prompt)  # retrained
    code, out, err = cli(capsys, [*evaluate, "--output", tmp_path / "old", "--resume"])
    assert code == 2 and "different prompt_files; the contents of the --prompts files" in err, err

    # Interrupted while evaluating the old prompt, its run.json lost: the old prompt's
    # finished shards are not taken for the new prompt's.
    (tmp_path / "old" / "run.json").write_text("")
    (tmp_path / "old" / "runs" / "prompt1" / "result.json").unlink()
    shards = tmp_path / "old" / "runs" / "prompt1" / "predictions" / "oxford_pets.shards"
    shards.mkdir()
    (shards / "settings.json").write_text(old_settings)
    old = next(iter(predictions(tmp_path / "old").values()))
    planted = (old["labels"] + 1) % 5  # what the old prompt predicted, say
    np.save(shards / "00000000-00000015.npy", planted)
    code, out, err = cli(capsys, [*evaluate, "--output", tmp_path / "old", "--resume"])
    assert code == 0, err
    new = next(iter(predictions(tmp_path / "old").values()))
    assert not np.array_equal(new["predicted"], planted)
    run = results(tmp_path / "old")["runs"][0]
    assert run["accuracy"]["oxford_pets"] == pytest.approx(100 * np.mean(new["predicted"] == new["labels"]))


# --- checkpoints -------------------------------------------------------------------------


def test_an_unfitting_checkpoint_falls_back_to_the_epoch_before(finished, tmp_path):
    from cocoop_tf import CoCoOp
    from cocoop_tf import CoOp
    from cocoop_tf import load_clip
    from cocoop_tf.files import save_safetensors
    from cocoop_tf.models import read_prompt
    from cocoop_tf.protocols.training import EpochCheckpoints
    from cocoop_tf.training import paper_optimizer

    folder = shutil.copytree(finished[1] / "runs" / "coop_seed1" / "checkpoints", tmp_path / "checkpoints")
    _, metadata = read_prompt(folder / "epoch_001.safetensors")
    training, classnames = metadata["training"], metadata["classnames"]
    clip = load_clip("random_tiny")
    # Valid prompt files that do not fit: another method's, and one trained on other weights.
    CoCoOp(clip, classnames).save_prompt(folder / "epoch_003.safetensors", training=training)
    shutil.copy(folder / "epoch_002.optimizer.safetensors", folder / "epoch_003.optimizer.safetensors")
    CoOp(load_clip("random_tiny", seed=1), classnames).save_prompt(folder / "epoch_002.safetensors", training=training)

    def fresh_model():
        model = CoOp(clip, classnames)
        model.compile(optimizer=paper_optimizer(5, 2, 0.002, 0.9, 5e-4, 0, 1e-5))
        return model

    model = fresh_model()
    # A model without resume_variables: the optimizer file holds the optimizer's variables alone.
    model.optimizer.build(model.trainable_variables)
    assert sorted(load_file(folder / "epoch_001.optimizer.safetensors")) == sorted(
        v.path for v in model.optimizer.variables
    )
    lines = []
    checkpoints = EpochCheckpoints(str(folder), training)
    assert checkpoints.resume(model, lines.append) == 1
    assert "epoch_003.safetensors (or its optimizer file) is damaged or does not fit this model" in lines[0]
    assert "holds a CoCoOp prompt" in lines[0] and "trained on another backbone" in lines[1]
    assert not [line for line in lines if "--force" in line or "force=True" in line]
    np.testing.assert_array_equal(model.prompt_learner.ctx, load_file(folder / "epoch_001.safetensors")["prompt_learner/ctx"])
    assert int(model.optimizer.iterations) == 5

    # None fits: the model keeps the weights it was built with, the optimizer its fresh state.
    save_safetensors(folder / "epoch_001.optimizer.safetensors", {"other": np.zeros(3, np.float32)})
    model = fresh_model()
    initial = np.array(model.prompt_learner.ctx)
    lines.clear()
    assert checkpoints.resume(model, lines.append) == 0
    assert "epoch_001.safetensors (or its optimizer file)" in lines[-1] and "does not match this optimizer" in lines[-1]
    np.testing.assert_array_equal(model.prompt_learner.ctx, initial)
    assert int(model.optimizer.iterations) == 0


def test_promptsrc_interrupted_after_epoch_2_resumes_to_the_uninterrupted_aggregated_prompt(
    finished, tmp_path, capsys, monkeypatch
):
    """PromptSRC ends training with the Gaussian-weighted sum of its epochs' prompts (GPA), whose
    running sums the model holds (`resume_variables`). Stopped by Ctrl-C after epoch 2's
    checkpoint, the run resumes in a model built anew: only the checkpoint files carry the sums.
    GPA mean 2 over 3 epochs weights every epoch (0.27, 0.45, 0.27)."""
    import keras

    from cocoop_tf.training import gpa_weights

    args = [
        "train", "--dataset", "oxford_pets", "--data-root", finished[0], "--backbone", "random_tiny",
        "--methods", "promptsrc", "--seeds", "1", "--shots", "1", "--epochs", "3", "--batch-size", "2",
        "--prompt-depth", "2", "--gpa-mean", "2", "--lr", "0.05", "--eval-batch-size", "8", "--deterministic",
    ]
    # Every epoch's checkpoint kept here, to check the sums; the interrupted run keeps the last two.
    code, out, err = cli(capsys, [*args, "--output", tmp_path / "whole", "--keep-checkpoints", "all"])
    assert code == 0, err
    run = tmp_path / "whole" / "runs" / "promptsrc_seed1"
    final = load_file(run / "prompt.safetensors")
    epochs = [load_file(run / "checkpoints" / f"epoch_{e:03d}.safetensors") for e in (1, 2, 3)]
    sums = [load_file(run / "checkpoints" / f"epoch_{e:03d}.optimizer.safetensors") for e in (2, 3)]
    weights = gpa_weights(3, 2.0, 1.0)
    for name in final:
        # The aggregation runs before the checkpoint of each epoch: epoch 2's holds the sum of
        # epochs 1 and 2, and epoch 3's (the last) the aggregated prompt, also in its sums.
        assert not np.allclose(epochs[1][name], epochs[0][name], atol=1e-4), name  # it trained
        np.testing.assert_allclose(sums[0][f"resume_variables/{_sum_path(sums[0], name)}"],
                                   weights[0] * epochs[0][name] + weights[1] * epochs[1][name], atol=1e-6)
        np.testing.assert_array_equal(epochs[2][name], final[name], err_msg=name)
        np.testing.assert_array_equal(sums[1][f"resume_variables/{_sum_path(sums[1], name)}"], final[name])

    def interrupted(self, epoch, logs=None):
        if epoch == 1:  # after epoch 2's checkpoint (this callback runs after it)
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(keras.callbacks.TerminateOnNaN, "on_epoch_end", interrupted)
        code, out, err = cli(capsys, [*args, "--output", tmp_path / "cut"])
    assert code == 128 + signal.SIGINT and "--resume" in err, err
    assert not (tmp_path / "cut" / "runs" / "promptsrc_seed1" / "checkpoints" / "epoch_003.safetensors").exists()
    code, out, err = cli(capsys, [*args, "--output", tmp_path / "cut", "--resume"])
    assert code == 0 and "resumed after epoch 2" in out, out
    resumed = load_file(tmp_path / "cut" / "runs" / "promptsrc_seed1" / "prompt.safetensors")
    assert resumed.keys() == final.keys()
    for name in final:
        np.testing.assert_allclose(resumed[name], final[name], rtol=0, atol=1e-6, err_msg=name)


def _sum_path(state, name):
    """The name of the GPA sum of the prompt weight `name` in an optimizer file: its path in the
    model, without the model's name (which Keras numbers per process)."""
    return f"gpa_sum_{name.rsplit('/', 1)[-1]}"


def test_a_changed_backbone_is_refused_naming_this_commands_options(finished, copy, capsys, monkeypatch):
    """--backbone names the same folder, which now holds other weights (of the same widths)."""
    from cocoop_tf import load_clip

    monkeypatch.setattr("cocoop_tf.protocols.runner.load_clip", lambda source: load_clip(source, seed=1))
    (copy / "runs" / "coop_seed1" / "result.json").unlink()
    code, out, err = cli(capsys, train_args(finished[0], copy, "--resume"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "different backbone_weights; the weights --backbone loads" in err and "--force" not in err
    (copy / "run.json").write_text("")
    code, out, err = cli(capsys, train_args(finished[0], copy, "--resume"))
    assert code == 2 and "epoch_001.safetensors" in err and "backbone_weights" in err and "--force" not in err


# --- full disks and signals --------------------------------------------------------------


class _Disk:
    """A disk with `free` bytes left: writes past it fail with ENOSPC, as a full disk's."""

    def __init__(self, free):
        self.free = free

    def wrap(self, file):
        disk = self

        class Limited:
            def __getattr__(self, name):
                return getattr(file, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                file.close()

            def write(self, data):
                if len(data) > disk.free:
                    file.write(data[: disk.free])
                    disk.free = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.free -= len(data)
                return file.write(data)

        return Limited()


def fill_disk(monkeypatch, free, under):
    """Every file opened for writing under `under` (by us, NumPy, matplotlib) sees `free` bytes."""
    disk = _Disk(free)
    fdopen, open_ = os.fdopen, builtins.open

    def on_disk(path):
        return isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(str(under))

    def limited_open(file, mode="r", *args, **kwargs):
        opened = open_(file, mode, *args, **kwargs)
        return disk.wrap(opened) if any(c in mode for c in "wax+") and on_disk(file) else opened

    def limited_fdopen(descriptor, *args, **kwargs):
        opened = fdopen(descriptor, *args, **kwargs)
        return disk.wrap(opened) if on_disk(os.readlink(f"/proc/self/fd/{descriptor}")) else opened

    monkeypatch.setattr(os, "fdopen", limited_fdopen)
    monkeypatch.setattr(builtins, "open", limited_open)
    monkeypatch.setattr(io, "open", limited_open)
    return disk


def test_a_full_disk_at_several_sizes_fails_with_one_line_and_resumes_identical(finished, copy, capsys, monkeypatch):
    unevaluated(copy)
    args = train_args(finished[0], copy, "--resume")
    # Free space for: no file; the shards, not the predictions; all but results.png (17 kB).
    for free in (0, 3300, 15_000):
        with monkeypatch.context() as patch:
            disk = fill_disk(patch, free, copy)
            code, out, err = cli(capsys, args)
        assert disk.free == 0 and code == 2, (free, err)
        assert len(err.strip().splitlines()) == 1 and "No space left on the device" in err and "--resume" in err
        assert_whole_files(copy)
    code, out, err = cli(capsys, args)
    assert code == 0, err
    assert_whole_files(copy)
    assert_same_results(copy, finished[1])


def test_sigterm_and_ctrl_c_stop_with_one_line_and_resume_identical(finished, copy, capsys, monkeypatch):
    unevaluated(copy)
    args = train_args(finished[0], copy, "--resume")
    # A real process, stopped by SIGTERM while result.json is written beside its place.
    stopped = subprocess.run([sys.executable, os.path.join(TESTS, "resume_fault_scripts.py"),
                              "sigterm_writing_result", *args], capture_output=True, text=True,
                             env=user_environment())
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert stopped.stderr.strip() == "Interrupted; continue with the same command and --resume."
    assert not (copy / "runs" / "coop_seed1" / "result.json").exists()
    assert_whole_files(copy)

    # Ctrl-C while predicting, then SIGTERM while the results are written.
    from cocoop_tf.protocols import runner

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        for sent, phase in ((signal.SIGINT, "predict_split"), (signal.SIGTERM, "report")):
            with monkeypatch.context() as patch:
                work = getattr(runner, phase)

                def interrupted(*a, work=work, sent=sent, **k):
                    os.kill(os.getpid(), sent)
                    return work(*a, **k)

                patch.setattr(runner, phase, interrupted)
                code, out, err = cli(capsys, args)
            assert code == 128 + sent
            assert err.strip() == "Interrupted; continue with the same command and --resume."
            assert_whole_files(copy)
    finally:
        signal.signal(signal.SIGINT, previous)
    # A SIGKILL leaves its staging files; the next run removes them.
    left = copy / "runs" / "coop_seed1" / ".result.json.x1y2z3w4.partial"
    left.write_text("{")
    code, out, err = cli(capsys, args)
    assert code == 0, err
    assert f"Removed {left}, left half-written by a killed process" in out and not left.exists()
    assert_same_results(copy, finished[1])


# --- hostile files ----------------------------------------------------------------------


def test_shard_and_prediction_files_run_no_code_and_allocate_only_what_they_declare(tmp_path):
    import zipfile

    from cocoop_tf.protocols import load_predictions
    from cocoop_tf.protocols.evaluation import _finished_shards

    planted = tmp_path / "planted"

    class Payload:
        def __reduce__(self):
            return (open, (str(planted), "w"))

    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "00000000-00000004.npy", np.array([Payload()] * 4, dtype=object), allow_pickle=True)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i4", "fortran_order": False, "shape": (4,)})
    (shards / "00000004-00000008.npy").write_bytes(header.getvalue() + b"\0" * 8)  # cut short
    bomb = io.BytesIO()
    np.lib.format.write_array_header_1_0(bomb, {"descr": "<i8", "fortran_order": False, "shape": (1 << 40,)})
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as archive:
        for name in ("labels", "predicted", "classnames"):
            archive.writestr(f"{name}.npy", bomb.getvalue() + b"\0" * 64)
    np.savez(tmp_path / "pickled.npz", labels=np.array([Payload()], dtype=object), predicted=np.zeros(1),
             classnames=np.array(["a"]))
    with memory_limit():
        assert _finished_shards(str(shards), [(0, 4), (4, 8)]) == {}
        with pytest.raises(ValueError, match="not a readable predictions file"):
            load_predictions(tmp_path / "bomb.npz")
        with pytest.raises(ValueError, match="not a readable predictions file"):
            load_predictions(tmp_path / "pickled.npz")
    assert not planted.exists()
