"""Runs for test_protocols.py that need a process of their own.

    python protocol_scripts.py resume DATA_ROOT OUTPUT none|after_epoch_1|resume
    python protocol_scripts.py mirrored DATA_ROOT OUTPUT -
    python protocol_scripts.py wide_prompt DATA_ROOT FILE -
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
    from cocoop_tf.protocols.training import EpochCheckpoints

    if mode == "after_epoch_1":
        save = EpochCheckpoints.save

        def save_then_stop(self, epoch, model):
            save(self, epoch, model)
            if epoch == 1:
                raise KeyboardInterrupt  # as if the job were killed here

        EpochCheckpoints.save = save_then_stop
        try:
            train(data_root, output, epochs=3, deterministic=True)
        except KeyboardInterrupt:
            sys.exit(3)
    else:
        train(data_root, output, resume=mode == "resume", epochs=3, deterministic=True)


def mirrored(data_root, output):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    train(data_root, os.path.join(output, "one"), epochs=2, batch_size=4)
    train(data_root, os.path.join(output, "two"), epochs=2, batch_size=4, strategy="mirrored")


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
    else:
        wide_prompt(output)
