"""`tf.distribute` strategies for `--strategy`, and seeding."""

import json
import os
import re

import keras
import tensorflow as tf


def make_strategy(name, tpu=None):
    """The `tf.distribute.Strategy` for a `--strategy` value.

    Models built and compiled under `strategy.scope()` train with `fit` on
    all replicas; Keras splits each global batch across them and sums the
    replicas' gradients, so the numbers match one device with the same
    global batch.

    Args:
        name: None (the default strategy: one device), "mirrored" (all local
            GPUs, or else all logical CPU devices), "multi_worker" (MultiWorkerMirroredStrategy; the
            cluster comes from the TF_CONFIG environment variable) or "tpu".
        tpu: for "tpu", the TPU name or grpc address (None: the local TPU).
    """
    if name is None:
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # MirroredStrategy takes the GPUs, or else only the first CPU; a machine
        # (or test) that splits its CPU into logical devices uses them all.
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "--strategy multi_worker needs the cluster in the TF_CONFIG environment "
                "variable on every worker, e.g. TF_CONFIG='{\"cluster\": {\"worker\": "
                "[\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": \"worker\", "
                "\"index\": 0}}'."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as error:
            raise ValueError(
                f"--strategy tpu found no TPU{' ' + repr(tpu) if tpu else ''}: {error}. "
                "Run on a TPU VM, or pass --tpu NAME."
            ) from None
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}; choose mirrored, multi_worker or tpu.")


# What the remaining workers' collective operations raise when a worker dies or stops answering.
LOST_WORKER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


# How TensorFlow names a task: "/job:worker/replica:0/task:1".
_TASK = r"/job:(\w+)/replica:\d+/task:(\d+)"


def lost_tasks(message):
    """The tasks that a lost-worker error names, as sorted `(job, index)` pairs.

    TensorFlow names them in one of two forms: the coordination service lists
    the tasks that stopped sending heartbeats after the word "unhealthy"; a
    collective transfer that fails mid-way names the task at the other end as
    "remote target /job:worker/replica:0/task:N". The first is preferred: a
    transfer from a healthy worker can fail because a third one stopped.

    Args:
        message: the error's text.

    Returns:
        A list of `(job, index)`, empty when the text names no task.
    """
    tasks = re.findall(_TASK, message.partition("unhealthy")[2])
    if not tasks:
        tasks = re.findall(r"remote target " + _TASK, message)
    return sorted({(job, int(index)) for job, index in tasks})


class WorkerLostError(RuntimeError):
    """A worker of a multi-worker run stopped; the others stop too, and `--resume` continues."""

    @classmethod
    def from_error(cls, error, output):
        tasks = lost_tasks(error.message)
        who = ", ".join(f"{job} {index}" for job, index in tasks) or "another worker"
        where = output if is_chief() else "the chief's --output folder"  # only the chief writes
        return cls(
            f"Lost contact with {who} of the cluster (it stopped, or its machine did), so this "
            f"worker stops too. The epochs finished so far are checkpointed in {where}: start "
            "every worker again with the same command and --resume."
        )


def is_chief():
    """Whether this process writes files: always, except non-chief workers of a cluster."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    if task.get("type") in (None, "chief"):
        return True
    has_chief = "chief" in config.get("cluster", {})
    return task.get("type") == "worker" and task.get("index", 0) == 0 and not has_chief


def set_seeds(seed, deterministic=False):
    """Seeds Python, NumPy, TensorFlow and Keras; optionally deterministic TF ops.

    Args:
        seed: an integer.
        deterministic: make TensorFlow's ops deterministic (slower), so
            repeated runs agree bit for bit.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
