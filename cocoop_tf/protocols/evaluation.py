"""Test-split accuracy, with the predictions kept so anyone can recount it.

A test split is cut into shards of whole batches, dealt out in turn to every
replica of the distribution strategy, on every worker. Each replica predicts
its shards on its own (no communication within a shard); after each round
of shards the workers' predictions are gathered to the chief, which keeps
each finished shard in a file. An image is always predicted in the same
batch of the same images, whatever the number of replicas and workers, so
the predictions equal a one-device evaluation exactly; an interrupted
evaluation resumes without predicting its finished shards again.
"""

import glob
import io
import os
import re
import shutil
import time

import numpy as np
import tensorflow as tf

from cocoop_tf.files import write_bytes
from cocoop_tf.training.workers import first_replica
from cocoop_tf.training.workers import from_chief
from cocoop_tf.training.workers import local_replicas
from cocoop_tf.training.workers import spans_workers

_SHARD_FILE = re.compile(r"(\d+)-(\d+)\.npy$")
_NOT_FINITE = -2
_PROGRESS_SECONDS = 10.0


def accuracy(labels, predicted):
    """Top-1 accuracy in percent, as the paper reports it."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.size == 0:
        raise ValueError("No test images to evaluate.")
    return float(100.0 * np.mean(labels == predicted))


def predict_split(
    model, dataset, split, batch_size, image_size, *, shard_size=1000, shard_dir=None,
    write_files=True, log=print,
):
    """Labels and top-1 predictions of `model` on a split, in `dataset.items(split)` order.

    Runs on every replica of the model's distribution strategy (every
    worker of a cluster calls it together); see the module docstring.

    Args:
        model: a classifier of any registered method; its class set must be
            `dataset.classnames` (see `set_classnames`).
        dataset: an `ImageDataset` view.
        split: "test" (or "val", "train").
        batch_size: images per batch on each replica.
        image_size: input side.
        shard_size: images per shard, rounded up to whole batches.
        shard_dir: folder for the finished shards (None: kept in memory
            only); shards already there are not predicted again. Remove it
            once the predictions are saved (`remove_shards`).
        write_files: False on the workers that are not the chief.
        log: function for progress lines.

    Returns:
        `(labels, predicted)`, int32 arrays.
    """
    if list(model.classnames) != list(dataset.classnames):
        raise ValueError("The model's classes are not the dataset's; call set_classnames first.")
    items = dataset.items(split)
    labels = np.array([item.label for item in items], np.int32)
    if not items:
        return labels, labels.copy()
    strategy = model.distribute_strategy
    replicas = strategy.num_replicas_in_sync
    local = local_replicas(strategy)
    first = first_replica(strategy)
    shard_size = -(-shard_size // batch_size) * batch_size
    shards = [(start, min(start + shard_size, len(items))) for start in range(0, len(items), shard_size)]

    # The chief's finished shards, on every worker (the others may not see its files).
    done = _finished_shards(shard_dir, shards) if shard_dir and write_files else {}
    known = np.full(len(items), -1, np.int32)
    for k, values in done.items():
        known[slice(*shards[k])] = values
    finished = np.array([k in done for k in range(len(shards))], np.int32)
    known, finished = from_chief(strategy, [known, finished])
    done = {k: known[slice(*shards[k])] for k in range(len(shards)) if finished[k]}
    todo = [k for k in range(len(shards)) if not finished[k]]
    rounds = [todo[i : i + replicas] for i in range(0, len(todo), replicas)]

    # One pipeline per local replica over all its shards, in order: a source that reads
    # whole files (TFDS) goes through the split once per replica, not once per shard.
    mine = [[r[first + i] for r in rounds if first + i < len(r)] for i in range(local)]
    batches = [
        iter(dataset.to_tf_dataset(
            split, batch_size, training=False, image_size=image_size,
            items=[item for k in shard_list for item in items[slice(*shards[k])]],
        ).map(lambda x, y: x))
        if shard_list else None
        for shard_list in mine
    ]
    run_step, gather = _traced_steps(model, strategy)
    before = sum(shards[k][1] - shards[k][0] for k in done)
    counted, started = before, time.time()
    last_report = started
    for round_shards in rounds:
        ids = [round_shards[first + i] if first + i < len(round_shards) else None for i in range(local)]
        steps = max(-(-(shards[k][1] - shards[k][0]) // batch_size) for k in round_shards)
        parts = [[] for _ in range(local)]
        for _ in range(steps):
            images = [
                next(batches[i]) if k is not None and len(parts[i]) * batch_size < shards[k][1] - shards[k][0]
                else None
                for i, k in enumerate(ids)
            ]
            spare = next((x for x in images if x is not None), None)
            if spare is None:  # this worker has nothing left this round; the others still work
                continue
            # A replica without a batch of its own computes a spare one; its output is dropped.
            filled = [spare if x is None else x for x in images]
            inputs = strategy.experimental_distribute_values_from_function(
                lambda context: filled[context.replica_id_in_sync_group - first]
            )
            outputs = strategy.experimental_local_results(run_step(inputs))
            for i, output in enumerate(outputs):
                if images[i] is not None:
                    parts[i].append(np.asarray(output))
        predicted = [np.concatenate(p) if p else np.zeros([0], np.int32) for p in parts]
        if spans_workers(strategy):
            predicted = _gather(strategy, gather, first, predicted, shard_size, round_shards, shards)
        else:
            predicted = predicted[: len(round_shards)]
        for k, values in zip(round_shards, predicted):
            start, end = shards[k]
            bad = np.flatnonzero(values == _NOT_FINITE)
            if bad.size:
                raise ValueError(
                    f"The logits of {bad.size} image(s) are not finite (the first: image "
                    f"{start + bad[0]}, {items[start + bad[0]].path}): their pixels hold NaN or "
                    "infinite values. Check the images."
                )
            done[k] = values
            if shard_dir and write_files:
                write_bytes(os.path.join(shard_dir, f"{start:08d}-{end:08d}.npy"), _npy(values))
            counted += end - start
        now = time.time()
        if len(shards) > 1 and (now - last_report >= _PROGRESS_SECONDS or round_shards is rounds[-1]):
            last_report = now
            rate = (counted - before) / max(now - started, 1e-9)
            left = (len(items) - counted) / rate if rate else float("inf")
            log(f"    {counted}/{len(items)} images, {rate:.1f} images/s, {_duration(left)} left")
    predicted = np.concatenate([done[k] for k in range(len(shards))]).astype(np.int32)
    return labels, predicted


def remove_shards(shard_dir):
    """Deletes a finished evaluation's shard folder."""
    shutil.rmtree(shard_dir, ignore_errors=True)


def _traced_steps(model, strategy):
    """`(run_step, gather)` of `model` on `strategy`: made once per model and class set.

    A new tf.function per split traced again on every split of a run (TensorFlow
    warned of retracing); a shorter last batch traces once more, with
    `reduce_retracing`, for every size after. The class set's token ids are
    constants of the trace, so a new class set (`set_classnames`) or strategy
    traces anew.
    """
    jit = bool(model.compiled and model.jit_compile)
    cached = getattr(model, "_traced_prediction_steps", None)
    if cached is not None and cached.fits(model, strategy, jit):
        return cached.run_step, cached.gather

    @tf.function(jit_compile=jit, reduce_retracing=True)
    def step(images):
        logits = model(images, training=False)
        finite = tf.reduce_all(tf.math.is_finite(tf.cast(logits, tf.float32)), axis=-1)
        return tf.where(finite, tf.argmax(logits, axis=-1, output_type=tf.int32), _NOT_FINITE)

    run_step = tf.function(lambda inputs: strategy.run(step, args=(inputs,)), reduce_retracing=True)
    # Traced once: an eager `strategy.gather` across workers builds a new function per call.
    gather = tf.function(lambda values: strategy.gather(values, axis=0))
    for function in (step, run_step, gather):
        # One trace per model and class set is by design (their weights and classes are
        # constants of the graph), not the accident TensorFlow's heuristic warns of: it
        # counts the traces of every function of the same code, whichever model it serves.
        function._omit_frequent_tracing_warning = True
    # On the model (not in a global map, which its functions would keep alive).
    model._traced_prediction_steps = _TracedSteps(model.token_ids, strategy, jit, run_step, gather)
    return run_step, gather


class _TracedSteps:
    """A model's traced prediction steps and what they were traced for."""

    __slots__ = ("token_ids", "strategy", "jit", "run_step", "gather")

    def __init__(self, token_ids, strategy, jit, run_step, gather):
        self.token_ids, self.strategy, self.jit = token_ids, strategy, jit
        self.run_step, self.gather = run_step, gather

    def fits(self, model, strategy, jit):
        return self.token_ids is model.token_ids and self.strategy is strategy and self.jit == jit


def _gather(strategy, gather, first, predicted, shard_size, round_shards, shards):
    """Every replica's predictions of one round, in replica order, on every worker.

    `gather` is `strategy.gather` along axis 0 as a tf.function; `first` is the
    global index of this worker's first replica.
    """
    padded = [np.pad(p, (0, shard_size - len(p)), constant_values=-1).astype(np.int32) for p in predicted]
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(padded[context.replica_id_in_sync_group - first])
    )
    gathered = np.asarray(gather(values)).reshape(-1, shard_size)
    return [row[: shards[k][1] - shards[k][0]] for k, row in zip(round_shards, gathered)]


def _finished_shards(shard_dir, shards):
    """`{shard: predicted}` of the shard files that match this split's shards."""
    wanted = {shard: k for k, shard in enumerate(shards)}
    done = {}
    for path in glob.glob(os.path.join(shard_dir, "*.npy")):
        match = _SHARD_FILE.search(os.path.basename(path))
        key = match and (int(match.group(1)), int(match.group(2)))
        if key not in wanted:
            continue  # written with another batch or shard size
        values = _read_array(path, key[1] - key[0])
        if values is not None:  # else damaged: predicted again
            done[wanted[key]] = values
    return done


def _read_array(path, length):
    """The int32 vector of `length` in an `.npy` file, or None when the file is anything else.

    The header's shape and type are checked, and the file's size against
    them, before any array is allocated; no pickle is ever read.
    """
    try:
        if not os.path.isfile(path):
            return None  # a FIFO or a device would block or never end
        with open(path, "rb") as f:
            shape, dtype = _npy_header(f)
            offset = f.tell()
        if shape != (length,) or dtype.kind not in "iu" or dtype.hasobject:
            return None
        if os.path.getsize(path) != offset + length * dtype.itemsize:
            return None
        return np.load(path, allow_pickle=False).astype(np.int32)
    except (OSError, ValueError, EOFError):
        return None


def _npy_header(f):
    """`(shape, dtype)` from the header of an open `.npy` file (ValueError if it has none)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unknown .npy version {version}")
    return shape, dtype


def _npy(values):
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values, np.int32))
    return buffer.getvalue()


def _duration(seconds):
    if seconds == float("inf"):
        return "unknown time"
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def save_predictions(path, labels, predicted, classnames):
    """Writes labels, predictions and class names to an `.npz` file, whole or not at all."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, labels=labels, predicted=predicted, classnames=np.array(classnames))
    write_bytes(path, buffer.getvalue())


# A predictions file holds two int32 vectors and the class names: far below this.
_MAX_PREDICTIONS_BYTES = 1 << 30


def load_predictions(path):
    """Reads a predictions file: `(labels, predicted, classnames)`.

    The sizes its members declare are checked before anything is read, so a
    damaged or hostile file fails with ValueError instead of allocating
    without bound; no pickle is ever read.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            needed = [f"{name}.npy" for name in ("labels", "predicted", "classnames")]
            missing = [name for name in needed if name not in members]
            if missing:
                raise ValueError(f"it lacks {', '.join(missing)}")
            if sum(members[name].file_size for name in needed) > _MAX_PREDICTIONS_BYTES:
                raise ValueError("its members declare more than 1 GiB")
            arrays = {}
            for name in needed:
                with archive.open(name) as f:
                    shape, dtype = _npy_header(f)
                    if len(shape) != 1 or dtype.hasobject or shape[0] * dtype.itemsize > members[name].file_size:
                        raise ValueError(f"{name} is not a vector of the size the archive declares")
                with archive.open(name) as f:
                    arrays[name[:-4]] = np.load(f, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"{os.fspath(path)!r} is not a readable predictions file: {error}") from None
    return arrays["labels"], arrays["predicted"], [str(c) for c in arrays["classnames"]]
