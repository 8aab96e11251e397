"""Several worker processes under one `tf.distribute` strategy: who is who, and agreeing on values.

A MultiWorkerMirroredStrategy runs the same program in every worker; only
the first worker (the chief) writes files, so what it read from them (the
epoch to resume from, finished evaluation shards, finished runs) has to
reach the others, which may not see its folder at all.
"""

import json

import numpy as np
import tensorflow as tf


def spans_workers(strategy):
    """Whether `strategy` spans several worker processes (MultiWorkerMirroredStrategy)."""
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and len(strategy.extended.worker_devices) < strategy.num_replicas_in_sync
    )


def local_replicas(strategy):
    """The number of replicas in this worker process."""
    if spans_workers(strategy):
        return len(strategy.extended.worker_devices)
    return strategy.num_replicas_in_sync


def first_replica(strategy):
    """The global index of this worker's first replica (0 without several workers).

    Every worker of a MultiWorkerMirroredStrategy has the same number of
    replicas, numbered worker by worker.
    """
    if not spans_workers(strategy):
        return 0
    return strategy.cluster_resolver.task_id * local_replicas(strategy)


def from_chief(strategy, values):
    """The chief's `values` (a list of arrays), on every worker; the values themselves without workers.

    Every worker must call it, with arrays of the same shapes and dtypes
    (a non-chief's contents are ignored).
    """
    values = [np.asarray(v) for v in values]
    if not spans_workers(strategy):
        return values

    def keep_first(*tensors):
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        # A sum over the replicas where all but replica 0 (on the chief) add zeros; one
        # tensor at a time, as a list would be packed into one tensor of one dtype.
        return [
            context.all_reduce(tf.distribute.ReduceOp.SUM, tf.where(first, t, tf.zeros_like(t)))
            for t in tensors
        ]

    summed = tf.function(strategy.run)(keep_first, args=tuple(tf.constant(v) for v in values))
    return [np.asarray(strategy.experimental_local_results(t)[0]) for t in summed]


def json_from_chief(strategy, value):
    """The chief's JSON-able `value` (e.g. a finished run's record), on every worker; `value`
    itself without workers.

    Every worker must call it (a non-chief's `value` is ignored).
    """
    if not spans_workers(strategy):
        return value
    # The bytes as int32, a dtype the collectives reduce (as the shard predictions).
    data = np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8).astype(np.int32)
    (size,) = from_chief(strategy, [np.int64(data.size)])
    sent = np.zeros(int(size), np.int32)
    sent[: min(data.size, sent.size)] = data[: sent.size]
    (received,) = from_chief(strategy, [sent])
    return json.loads(received.astype(np.uint8).tobytes().decode("utf-8"))
