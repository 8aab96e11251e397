"""Runs for test_protocols.py that need a process of their own.

    python protocol_scripts.py resume DATA_ROOT OUTPUT none|resume|kill_in_checkpoint_3|kill_writing_result
    python protocol_scripts.py hold DATA_ROOT OUTPUT -
    python protocol_scripts.py mirrored DATA_ROOT OUTPUT -
    python protocol_scripts.py worker0|worker1 DATA_ROOT OUTPUT PORT,PORT[,die][,fresh][,promptsrc]
    python protocol_scripts.py wide_prompt DATA_ROOT FILE -
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def free_ports(count):
    """`count` ports free on localhost now, for a loopback cluster's TF_CONFIG."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def train(data_root, output, resume=False, **settings):
    from cocoop_tf.protocols import RunConfig
    from cocoop_tf.protocols import run_protocol

    config = RunConfig(**{
        "backbone": "random_tiny", "methods": ["cocoop"], "seeds": [1], "shots": 2,
        "batch_size": 2, "eval_batch_size": 8, "lr": 0.05, "data_root": data_root, **settings,
    })
    run_protocol("train", config, output, source="oxford_pets",
                 evaluations=[("oxford_pets", "all")], resume=resume)


def resume(data_root, output, mode):
    """Trains 3 epochs; `kill_*` modes die by SIGKILL (no clean-up at all) at one point."""
    import signal

    from cocoop_tf.protocols.training import EpochCheckpoints

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if mode == "kill_in_checkpoint_3":  # the optimizer file written, the prompt file not
        save = EpochCheckpoints.save

        def save_then_die(self, epoch, model):
            if epoch == 3:
                from cocoop_tf.files import save_safetensors

                state = {v.path: np.asarray(v) for v in model.optimizer.variables}
                save_safetensors(self._optimizer_path(self.path(epoch)), state)
                die()
            save(self, epoch, model)

        EpochCheckpoints.save = save_then_die
    elif mode == "kill_writing_result":  # result.json's data written beside it, not yet renamed
        replace = os.replace

        def replace_or_die(source, target):
            if str(target).endswith("result.json"):
                die()
            replace(source, target)

        os.replace = replace_or_die
    train(data_root, output, resume=mode == "resume", epochs=3, deterministic=True)


def hold(output):
    """Holds a run folder's lock, as a working run does, until killed."""
    import time

    from cocoop_tf.protocols.run_folder import RunFolder

    RunFolder(output, {"held": True})
    print("holding", flush=True)
    time.sleep(600)


# Global batch 4; evaluation in shards of 2 images, so 5 shards are dealt to 2 replicas.
# Every epoch's checkpoint kept: the tests compare them across devices and count them.
DISTRIBUTED = dict(epochs=3, batch_size=4, eval_batch_size=2, eval_shard_size=2, keep_checkpoints="all")


# KgCoOp's loss term, MaPLe's deep prompts in both towers and PromptSRC's (IVLP's prompts, its
# three loss terms and the aggregation over epochs, which a GPA mean of 2 spreads over all three),
# beside CoCoOp, across replicas.
MIRRORED_METHODS = dict(methods=["cocoop", "kgcoop", "maple", "promptsrc"], prompt_depth=2, gpa_mean=2.0)


def mirrored(data_root, output):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    train(data_root, os.path.join(output, "one"), **DISTRIBUTED, **MIRRORED_METHODS)
    train(data_root, os.path.join(output, "two"), **DISTRIBUTED, **MIRRORED_METHODS, strategy="mirrored")


def worker_arguments(data_root, output, promptsrc=False):
    """The `cocoop-tf train` command of the worker runs, less --strategy (one device: the reference).

    `promptsrc`: PromptSRC instead of CoCoOp, with MIRRORED_METHODS' settings (`mirrored`'s
    one-device run is the reference).
    """
    methods = ["--methods", "cocoop"]
    if promptsrc:
        methods = ["--methods", "promptsrc", "--prompt-depth", str(MIRRORED_METHODS["prompt_depth"]),
                   "--gpa-mean", str(MIRRORED_METHODS["gpa_mean"])]
    return [
        "train", "--dataset", "oxford_pets", "--data-root", str(data_root), "--output", str(output),
        "--backbone", "random_tiny", *methods, "--seeds", "1", "--shots", "2", "--lr", "0.05",
        "--epochs", str(DISTRIBUTED["epochs"]), "--batch-size", str(DISTRIBUTED["batch_size"]),
        "--eval-batch-size", str(DISTRIBUTED["eval_batch_size"]),
        "--eval-shard-size", str(DISTRIBUTED["eval_shard_size"]),
        "--keep-checkpoints", DISTRIBUTED["keep_checkpoints"],
    ]


def worker(index, data_root, output, option):
    """One of two workers on this machine, through the command line (the user's one-line errors).

    `option` is PORT,PORT[,die][,fresh][,promptsrc]: `die` kills worker 1 at the end of epoch 2,
    `fresh` starts the run without --resume (the command every worker gets first), `promptsrc`
    trains PromptSRC instead of CoCoOp (see `worker_arguments`). Environment:
    COCOOP_TEST_SLOW_FOLDER=SECONDS waits before the output folder is opened, so the other
    worker gets there first; COCOOP_TEST_KILL=MOMENT kills this worker by SIGKILL at one
    moment of the run: `in_step` (during the first step of epoch 2), `epoch_2` (after epoch 2),
    `evaluation` (as evaluation starts); COCOOP_TEST_PROMPTS=FOLDER saves the model each job
    trained on this worker as FOLDER/METHOD_workerINDEX.safetensors (a non-chief writes no
    file of its own).
    """
    import json
    import signal
    import threading
    import time

    import keras

    from cocoop_tf.cli import main
    from cocoop_tf.protocols import run_folder

    ports, flags = option.split(",")[:2], option.split(",")[2:]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{port}" for port in ports]},
        "task": {"type": "worker", "index": index},
    })
    kill = os.environ.get("COCOOP_TEST_KILL") or ("epoch_2" if "die" in flags and index == 1 else None)

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if kill == "epoch_2":
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                die()

        keras.callbacks.TerminateOnNaN.on_epoch_end = on_epoch_end
    elif kill == "in_step":
        # 30 ms into the first step of epoch 2 (traced by then, so tens of ms long): often in
        # the middle of an all-reduce's transfer, which TensorFlow then reports as the RPC
        # error's "remote target", otherwise by missed heartbeats ("unhealthy").
        epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            epochs.append(epoch)

        def on_train_batch_begin(self, batch, logs=None):
            if epochs == [0, 1] and batch == 0:
                threading.Timer(0.03, die).start()

        keras.callbacks.TerminateOnNaN.on_epoch_begin = on_epoch_begin
        keras.callbacks.TerminateOnNaN.on_train_batch_begin = on_train_batch_begin
    elif kill == "evaluation":
        from cocoop_tf.protocols import runner

        def predict_split(*args, **kwargs):
            die()

        runner.predict_split = predict_split
    elif kill:
        raise ValueError(f"unknown COCOOP_TEST_KILL {kill!r}")
    prompts = os.environ.get("COCOOP_TEST_PROMPTS")
    if prompts:
        from cocoop_tf.protocols import runner

        train_job = runner.train_job

        def train_and_save(plan, method, *args, **kwargs):
            model = train_job(plan, method, *args, **kwargs)
            model.save_prompt(os.path.join(prompts, f"{method}_worker{index}.safetensors"))
            return model

        runner.train_job = train_and_save
    slow = float(os.environ.get("COCOOP_TEST_SLOW_FOLDER", 0))
    if slow:
        opened = run_folder.RunFolder.__init__

        def open_later(self, *args, **kwargs):
            time.sleep(slow)
            opened(self, *args, **kwargs)

        run_folder.RunFolder.__init__ = open_later
    # The coordination service as MultiWorkerMirroredStrategy sets it up, but with a dead worker
    # found after 4 s without heartbeats instead of 10 s, to keep the tests short.
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    context.context().configure_coordination_service(
        service_type="standalone", service_leader="/job:worker/replica:0/task:0",
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=len(ports))],
        heartbeat_timeout_in_ms=4000,
    )
    args = worker_arguments(data_root, output, promptsrc="promptsrc" in flags) + ["--strategy", "multi_worker"]
    if not ("die" in flags or "fresh" in flags):
        args.append("--resume")
    sys.exit(main(args))


def wide_prompt(path):
    import dataclasses

    from cocoop_tf import CoCoOp
    from cocoop_tf.clip.backbone import random_backbone
    from cocoop_tf.clip.loader import RANDOM_CONFIGS

    architecture = dataclasses.replace(RANDOM_CONFIGS["random_tiny"], text_width=48, text_heads=3)
    CoCoOp(random_backbone(architecture, 0), ["a", "b"]).save_prompt(path)


if __name__ == "__main__":
    command, data_root, output, option = sys.argv[1:5]
    if command == "resume":
        resume(data_root, output, option)
    elif command == "mirrored":
        mirrored(data_root, output)
    elif command.startswith("worker"):
        worker(int(command[-1]), data_root, output, option)
    elif command == "hold":
        hold(output)
    else:
        wide_prompt(output)
