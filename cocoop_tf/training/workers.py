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
    # All values travel as the bytes of one int32 vector: a single traced broadcast per
    # strategy serves every call (a new trace per call made TensorFlow warn of retracing).
    chunks = [np.ascontiguousarray(v).reshape(-1).view(np.uint8) for v in values]
    data = np.concatenate([np.pad(c, (0, -len(c) % 4)) for c in chunks] or [np.zeros(0, np.uint8)])
    received = _broadcast_function(strategy)(tf.constant(data.view(np.int32)))
    received = np.asarray(strategy.experimental_local_results(received)[0]).view(np.uint8)
    result, offset = [], 0
    for value, chunk in zip(values, chunks):
        result.append(received[offset : offset + len(chunk)].view(value.dtype).reshape(value.shape).copy())
        offset += len(chunk) + (-len(chunk) % 4)
    return result


def _keep_first(tensor):
    context = tf.distribute.get_replica_context()
    first = tf.equal(context.replica_id_in_sync_group, 0)
    # A sum over the replicas where all but replica 0 (on the chief) add zeros: the bits arrive whole.
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.where(first, tensor, tf.zeros_like(tensor)))


def _broadcast_function(strategy):
    """The strategy's traced `_keep_first` (one per strategy, any vector length)."""
    function = getattr(strategy, "_cocoop_tf_broadcast", None)
    if function is None:
        function = tf.function(
            lambda tensor: strategy.run(_keep_first, args=(tensor,)),
            input_signature=[tf.TensorSpec([None], tf.int32)],
        )
        strategy._cocoop_tf_broadcast = function
    return function


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
