"""Several worker processes on one output folder: the order they reach it never matters, and a
worker that dies at any moment is named in the others' one-line error.

The two-worker runs go through `protocol_scripts.py worker0|worker1` (the command line, with
loopback TF_CONFIG); the one-device reference is the same command in this process.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from protocol_scripts import DISTRIBUTED
from protocol_scripts import free_ports
from protocol_scripts import worker_arguments
from real_layouts import write_real_layout

from cocoop_tf.protocols import RunFolderError
from cocoop_tf.protocols.distribute import WorkerLostError
from cocoop_tf.protocols.distribute import lost_tasks
from cocoop_tf.protocols.run_folder import RunFolder

TESTS = pathlib.Path(__file__).parent
RUN = pathlib.Path("runs") / "cocoop_seed1"

# The ends of real messages of a chief whose worker 1 was SIGKILLed (the part before them is
# "Graph execution error: Detected at node ... defined at (most recent call last): File ...").
HEARTBEATS = (
    "Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks "
    "are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have "
    "crashed. Check the task logs for an earlier error, or scheduler events (e.g. preemption, "
    "eviction) to debug further.\nThe error could be from a previous operation. Restart your "
    "program to reset.\n\t [[{{node CollectiveReduceV2}}]] [Op:__inference_run_12029]"
)
TRANSFER = (
    "Collective ops is aborted by: Socket closed\nAdditional GRPC error information from remote "
    "target /job:worker/replica:0/task:1 while calling /tensorflow.WorkerService/RecvBuf:\n"
    ":UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:\"Socket closed\"}\nThe "
    "error could be from a previous operation. Restart your program to reset.\n\t "
    "[[{{node CollectiveReduceV2_2}}]] [Op:__inference_multi_step_on_iterator_11125]"
)
TRACE = (
    "Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call "
    "last):\n  File \"/job:worker/replica:0/task:7/train.py\", line 10, in <module>\n\n"
)  # a path that looks like a task's name: neither form, never taken


def test_a_lost_worker_is_named_in_either_form_tensorflow_gives(monkeypatch):
    assert lost_tasks(TRACE + HEARTBEATS) == [("worker", 1)]
    assert lost_tasks(TRACE + TRANSFER) == [("worker", 1)]
    # The heartbeat list is the service's verdict: a transfer from a live worker fails too.
    assert lost_tasks(TRANSFER.replace("task:1", "task:2") + HEARTBEATS) == [("worker", 1)]
    assert lost_tasks(HEARTBEATS.replace("task:1\n", "task:1\n/job:worker/replica:0/task:3\n")) == [
        ("worker", 1), ("worker", 3)
    ]
    assert lost_tasks(TRACE + "Socket closed") == []

    class Error:
        message = TRACE + TRANSFER

    line = str(WorkerLostError.from_error(Error, "out"))
    assert line.startswith("Lost contact with worker 1 of the cluster") and "--resume" in line
    assert "checkpointed in out: start every worker again" in line
    Error.message = "Socket closed"
    assert str(WorkerLostError.from_error(Error, "out")).startswith("Lost contact with another worker")
    # A worker that is not the chief wrote nothing in its own --output.
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 1},
    }))
    line = str(WorkerLostError.from_error(Error, "out"))
    assert "checkpointed in the chief's --output folder: start" in line


def test_a_non_chief_worker_leaves_the_output_folder_to_the_chief(tmp_path):
    """Whatever the chief has written there yet (nothing, or this run's run.json), and wherever the
    folder lies, a non-chief neither refuses nor writes it: the chief alone checks it."""
    settings = {"protocol": "train", "shots": 2}

    def as_non_chief(path, resume=False):
        RunFolder(path, settings, resume=resume, write_files=False, log=pytest.fail).close()

    as_non_chief(tmp_path / "not_yet")  # before the chief
    assert not (tmp_path / "not_yet").exists()
    chief = RunFolder(tmp_path / "shared", settings)  # the chief, first, holding the lock
    try:
        as_non_chief(tmp_path / "shared")  # the same command: no --resume
        as_non_chief(tmp_path / "shared", resume=True)
    finally:
        chief.close()
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "notes.txt").write_text("not a run")
    as_non_chief(tmp_path / "local")
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == [".lock", "run.json"]
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == ["notes.txt"]
    # The chief itself still refuses what it must.
    with pytest.raises(RunFolderError, match="already holds this run. Pass --resume"):
        RunFolder(tmp_path / "shared", settings)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """OxfordPets in its real layout, 6 classes (the tiny model predicts more than one of them)."""
    root = str(tmp_path_factory.mktemp("data"))
    write_real_layout(root, "oxford_pets", (2, 2, 2))
    return root


def _workers(data_root, output, flags="", chief_env=None, other_env=None, other_output=None, timeout=300):
    """Worker 0 (the chief) and worker 1 on loopback, both given `output` (or worker 1
    `other_output`); their CompletedProcesses."""
    ports = ",".join(map(str, free_ports(2)))
    processes = [
        subprocess.Popen(
            [sys.executable, TESTS / "protocol_scripts.py", f"worker{index}", data_root, folder,
             ports + flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**_environ(), **(env or {})},
        )
        for index, (folder, env) in enumerate([(output, chief_env), (other_output or output, other_env)])
    ]
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
    finally:
        for p in processes:  # a hang fails the test instead of holding CI
            if p.poll() is None:
                p.kill()
                p.wait()
    return [subprocess.CompletedProcess(p.args, p.returncode, *o) for p, o in zip(processes, outputs)]


def _environ():
    return {k: v for k, v in os.environ.items() if not k.startswith("COCOOP_TEST_")}


def test_two_workers_sharing_one_output_folder_finish_as_one_process(data_root, tmp_path, capsys):
    """README's "same command on every worker", one shared --output, the non-chief slowed down so
    that the chief has written run.json before the non-chief opens the folder; then --resume."""
    from cocoop_tf.cli import main

    assert main(worker_arguments(data_root, tmp_path / "one")) == 0, capsys.readouterr().err
    assert "1 replica(s)" in capsys.readouterr().out
    slowed = {"COCOOP_TEST_SLOW_FOLDER": "3"}
    chief, other = _workers(data_root, tmp_path / "shared", ",fresh", other_env=slowed)
    assert chief.returncode == 0 and other.returncode == 0, chief.stderr[-3000:] + other.stderr[-3000:]
    assert "2 replica(s)" in chief.stdout and "Results in" in chief.stdout
    assert "Results in" not in other.stdout  # only the chief writes
    assert "retracing" not in chief.stderr + other.stderr  # one traced broadcast serves every value
    one = load_file(tmp_path / "one" / RUN / "prompt.safetensors")
    start = load_file(tmp_path / "one" / RUN / "checkpoints" / "epoch_001.safetensors")
    assert any(not np.allclose(start[k], one[k]) for k in one)  # training moved the weights
    prompt = load_file(tmp_path / "shared" / RUN / "prompt.safetensors")
    for name in one:  # equal up to the order of float sums across workers
        assert np.max(np.abs(prompt[name] - one[name])) <= 1e-5 * np.max(np.abs(one[name])), name
    expected = np.load(tmp_path / "one" / RUN / "predictions" / "oxford_pets.npz")
    predictions = np.load(tmp_path / "shared" / RUN / "predictions" / "oxford_pets.npz")
    assert len(set(expected["predicted"])) > 1  # a comparison that could fail
    for name in ("labels", "predicted", "classnames"):
        np.testing.assert_array_equal(predictions[name], expected[name], err_msg=name)
    accuracy = [json.loads((tmp_path / run / "results.json").read_text())["runs"][0]["accuracy"]
                for run in ("one", "shared")]
    assert accuracy[0] == accuracy[1]

    # --resume of the finished run, worker 1 given a folder of its own (it need not see the
    # chief's): the chief's "done before" holds for both, or worker 1 would train alone.
    chief, other = _workers(data_root, tmp_path / "shared", other_output=tmp_path / "elsewhere")
    assert chief.returncode == 0 and other.returncode == 0, chief.stderr[-3000:] + other.stderr[-3000:]
    assert "CoCoOp, seed 1: done before, kept" in chief.stdout
    assert "CoCoOp, seed 1: done before, kept" in other.stdout
    assert "training on" not in chief.stdout + other.stdout
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("moment", ["in_step", "evaluation"])
def test_a_worker_killed_at_any_moment_is_named_in_the_chief_s_one_line_error(data_root, tmp_path, moment):
    """Worker 1 SIGKILLs itself 30 ms into a training step of epoch 2 (TensorFlow reports that as a
    failed transfer or as missed heartbeats, by chance), or as evaluation starts; after epoch 2 is
    test_protocols.py's two-worker test. The chief, slowed before the folder this time (the
    opposite order), names worker 1 and stops."""
    chief, other = _workers(
        data_root, tmp_path / "shared", ",fresh", chief_env={"COCOOP_TEST_SLOW_FOLDER": "1"},
        other_env={"COCOOP_TEST_KILL": moment},
    )
    assert other.returncode == -9, other.stderr[-3000:]
    errors = [line for line in chief.stderr.splitlines() if line.startswith("cocoop-tf train: error")]
    assert chief.returncode == 2 and errors == [
        "cocoop-tf train: error: Lost contact with worker 1 of the cluster (it stopped, or its machine "
        "did), so this worker stops too. The epochs finished so far are checkpointed in "
        f"{tmp_path / 'shared'}: start every worker again with the same command and --resume."
    ], chief.stderr[-3000:]
    # It died where it was meant to: in epoch 2 (the chief may have finished it), or after training.
    epochs = len(list((tmp_path / "shared" / RUN / "checkpoints").glob("epoch_*.optimizer.safetensors")))
    assert epochs in ((1, 2) if moment == "in_step" else (DISTRIBUTED["epochs"],)), epochs
    assert not (tmp_path / "shared" / RUN / "result.json").exists()
