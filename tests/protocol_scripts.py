"""Runs for test_protocols.py that need a process of their own.

    python protocol_scripts.py resume DATA_ROOT OUTPUT none|resume|kill_in_checkpoint_3|kill_writing_result
    python protocol_scripts.py hold DATA_ROOT OUTPUT -
    python protocol_scripts.py mirrored DATA_ROOT OUTPUT -
    python protocol_scripts.py worker0|worker1 DATA_ROOT OUTPUT PORT,PORT[,die]
    python protocol_scripts.py wide_prompt DATA_ROOT FILE -
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


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
DISTRIBUTED = dict(epochs=3, batch_size=4, eval_batch_size=2, eval_shard_size=2)


# KgCoOp's loss term and MaPLe's deep prompts in both towers, beside CoCoOp, across replicas.
MIRRORED_METHODS = dict(methods=["cocoop", "kgcoop", "maple"], prompt_depth=2)


def mirrored(data_root, output):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    train(data_root, os.path.join(output, "one"), **DISTRIBUTED, **MIRRORED_METHODS)
    train(data_root, os.path.join(output, "two"), **DISTRIBUTED, **MIRRORED_METHODS, strategy="mirrored")


def worker(index, data_root, output, option):
    """One of two workers on this machine; `die`: worker 1 is killed at the end of epoch 2."""
    import json
    import signal

    import keras

    ports, die = option.split(",")[:2], option.endswith(",die")
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{port}" for port in ports]},
        "task": {"type": "worker", "index": index},
    })
    if die and index == 1:
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                os.kill(os.getpid(), signal.SIGKILL)

        keras.callbacks.TerminateOnNaN.on_epoch_end = on_epoch_end
    train(data_root, output, resume=not die, **DISTRIBUTED, strategy="multi_worker")


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
