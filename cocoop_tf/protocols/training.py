"""Training a prompt learner as the paper does, with a checkpoint per epoch and resume."""

import functools
import glob
import math
import os
import re
import sys
import time

import keras
import numpy as np
from safetensors import safe_open

from cocoop_tf.files import save_safetensors
from cocoop_tf.models import get_method
from cocoop_tf.training import paper_optimizer
from cocoop_tf.training.workers import from_chief
from cocoop_tf.training.workers import spans_workers

EPOCH_FILE = re.compile(r"epoch_(\d+)\.safetensors$")

# XLA fuses the work between the matmuls; with ViT-B/16's 512-wide text tower that makes a
# CPU training step 1.3-1.7x faster (benchmarks/text_encoder_speed.py). On smaller towers,
# such as the demo's 128-wide one, the compile time eats the gain.
XLA_MIN_TEXT_WIDTH = 512


def build_model(method, clip, classnames, config, templates):
    """The model of a registered method, configured by a `RunConfig`.

    Args:
        method: a method name ("zeroshot", "coop", "cocoop", ...).
        clip: the frozen backbone.
        classnames: the class set.
        config: a `RunConfig`.
        templates: the prompt templates of the dataset (zero-shot CLIP's
            `template`), unless the config sets its own.
    """
    config = config.for_method(method)  # its paper's settings where the run leaves them unset
    settings = {**config.to_dict(), "template": config.templates or templates}
    return get_method(method).from_run_config(clip, classnames, settings)


def uses_xla(jit_compile, clip):
    """Whether a run compiles its steps with XLA: `jit_compile` True or False, or "auto"
    (XLA for a text tower at least `XLA_MIN_TEXT_WIDTH` wide)."""
    if jit_compile == "auto":
        return clip.text_encoder.hidden_dim >= XLA_MIN_TEXT_WIDTH
    return bool(jit_compile)


def epoch_seed(seed, epoch):
    """The data seed of one epoch: augmentation and order depend only on (seed, epoch),
    so a resumed run sees the images an uninterrupted one sees."""
    return seed * 1_000_003 + epoch


def progress_verbosity():
    """Keras' progress bars in a terminal; elsewhere (a log, a notebook's captured output)
    none, and `EpochLines` prints a few epoch lines instead."""
    return 1 if sys.stdout.isatty() else 0


# Epoch lines printed per run where there is no progress bar: a 100-epoch recipe on a small
# folder would otherwise print 100 lines per seed. The run's log file gets every epoch.
MAX_EPOCH_LINES = 10

# What `EpochCheckpoints` keeps: "last" (the newest whole epoch and the one before it) or "all".
KEEP_CHECKPOINTS = ("last", "all")


# Names of a model's `resume_variables` in the optimizer file: a prefix no optimizer variable has.
RESUME_PREFIX = "resume_variables/"


def resume_variables(model):
    """The model's variables, besides its weights and optimizer, that a resumed run needs
    (`CLIPClassifier.resume_variables`: PromptSRC's prompt aggregation sums)."""
    return list(getattr(model, "resume_variables", ()))


class EpochCheckpoints:
    """A checkpoint after each epoch: the prompt file and the optimizer's state.

    `epoch_003.safetensors` is a regular prompt checkpoint (`from_prompt`
    reads it); `epoch_003.optimizer.safetensors` holds the optimizer's
    variables (momentum, step counter), so training can resume exactly, and
    the model's `resume_variables` (PromptSRC's running sums of its
    prompt aggregation), named `resume_variables/<path in the model>`. A model without
    any writes the optimizer's variables alone.

    With `keep="last"` only what resume needs stays: once an epoch's two
    files are written, the checkpoints older than the epoch before it are
    removed (resume passes over a damaged newest checkpoint to the one
    before it), so a 100-epoch run leaves 4 files, not 200.

    Args:
        folder: where the checkpoints go.
        training: the training settings each prompt file records (see
            `save_prompt`).
        keep: "last" (the newest two epochs) or "all" (every epoch).
    """

    def __init__(self, folder, training=None, keep="last"):
        if keep not in KEEP_CHECKPOINTS:
            raise ValueError(f"keep_checkpoints (--keep-checkpoints) must be one of {KEEP_CHECKPOINTS}, got {keep!r}.")
        self.folder = folder
        self.training = training
        self.keep = keep

    def path(self, epoch):
        return os.path.join(self.folder, f"epoch_{epoch:03d}.safetensors")

    def epochs(self):
        """The epochs whose two files both exist, newest first."""
        epochs = []
        for path in glob.glob(os.path.join(self.folder, "epoch_*.safetensors")):
            match = EPOCH_FILE.search(os.path.basename(path))
            if match and os.path.exists(self._optimizer_path(path)):
                epochs.append(int(match.group(1)))
        return sorted(epochs, reverse=True)

    def resume(self, model, log=print):
        """Restores the last epoch whose checkpoint is whole and fits `model`; returns it, or 0.

        A damaged checkpoint (empty, truncated) or one that does not fit
        (another method's, other shapes) is passed over with a line saying
        so, and the epoch before it is tried; with none left, `model` keeps
        the weights it had and trains from the start.
        """
        model.optimizer.build(model.trainable_variables)
        variables = list(model.trainable_variables) + list(model.optimizer.variables) + resume_variables(model)
        initial = [np.array(v) for v in variables]  # a failed restore may have assigned some
        for epoch in self.epochs():
            path = self.path(epoch)
            try:
                self.restore(epoch, model)
                return epoch
            except (OSError, ValueError) as error:
                for variable, value in zip(variables, initial):
                    variable.assign(value)
                log(f"  {path} (or its optimizer file) is damaged or does not fit this model "
                    f"({_reason(error)}); using the epoch before it")
        return 0

    @staticmethod
    def _optimizer_path(path):
        return path[: -len(".safetensors")] + ".optimizer.safetensors"

    def save(self, epoch, model):
        path = self.path(epoch)
        state = {name: np.asarray(v) for name, v in self._state_variables(model).items()}
        # The prompt file last: `epochs` trusts an epoch only once both exist.
        save_safetensors(self._optimizer_path(path), state)
        model.save_prompt(path, training=self.training)
        if self.keep == "last":
            self._remove_before(epoch)

    def _remove_before(self, epoch):
        """Removes the checkpoints older than the newest whole epoch before `epoch` (whole
        files only: every file is written whole, then renamed)."""
        older = [e for e in self.epochs() if e < epoch]
        if not older:
            return
        for path in glob.glob(os.path.join(self.folder, "epoch_*.safetensors")):
            match = re.search(r"epoch_(\d+)(\.optimizer)?\.safetensors$", os.path.basename(path))
            # The prompt files first: `epochs` never trusts an epoch whose prompt file is gone.
            if match and int(match.group(1)) < older[0] and not match.group(2):
                _remove(path)
                _remove(self._optimizer_path(path))
        for path in glob.glob(os.path.join(self.folder, "epoch_*.optimizer.safetensors")):
            match = re.search(r"epoch_(\d+)\.optimizer\.safetensors$", os.path.basename(path))
            if match and int(match.group(1)) < older[0]:  # one a killed process left alone
                _remove(path)

    @staticmethod
    def _state_variables(model):
        """What the optimizer file holds, by name: the optimizer's variables and the model's
        `resume_variables`."""
        model.optimizer.build(model.trainable_variables)
        variables = {v.path: v for v in model.optimizer.variables}
        variables.update({RESUME_PREFIX + _path_in(model, v): v for v in resume_variables(model)})
        return variables

    def restore(self, epoch, model):
        """Loads one epoch's prompt and optimizer state into `model` (ValueError if they do not fit)."""
        path = self.path(epoch)
        model.load_prompt(path)
        variables = self._state_variables(model)
        optimizer_path = self._optimizer_path(path)
        try:
            with safe_open(optimizer_path, framework="numpy") as f:
                # Names and shapes first, from the header: nothing is read that does not fit.
                shapes = {name: (f.get_slice(name).get_dtype(), tuple(f.get_slice(name).get_shape()))
                          for name in f.keys()}
                wanted = {name: (_SAFETENSORS_DTYPES.get(str(v.dtype)), tuple(v.shape))
                          for name, v in variables.items()}
                if shapes != wanted:
                    mine = " and the model's resume variables are" if resume_variables(model) else " has"
                    raise ValueError(
                        f"Checkpoint {optimizer_path!r} does not match this optimizer (it holds "
                        f"{sorted(shapes)}, the optimizer{mine} {sorted(wanted)}, or other types or shapes); "
                        "it was written by a run with other settings."
                    )
                state = {name: f.get_tensor(name) for name in shapes}
        except ValueError:
            raise
        except Exception as error:  # safetensors' own errors: a damaged file
            raise ValueError(f"{optimizer_path!r} is not a readable checkpoint: {error}") from None
        for name, value in state.items():
            variables[name].assign(value)


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _path_in(model, variable):
    """A variable's path without the model's own name, which Keras numbers by how many models of
    its class the process made before ("prompt_src_3/..."): a resumed run's model has another."""
    prefix = f"{model.name}/"
    return variable.path[len(prefix):] if variable.path.startswith(prefix) else variable.path


_SAFETENSORS_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64",
                       "int32": "I32", "int64": "I64"}


def _reason(error):
    """An error's first sentence: what is wrong, without advice meant for other callers."""
    text = " ".join(str(error).split())
    return text.split(". ")[0].rstrip(".")


def train_prompt_model(
    model,
    dataset,
    config,
    seed,
    image_size,
    checkpoint_dir,
    log_dir=None,
    resume=False,
    write_files=True,
    training=None,
    log=print,
    record=None,
):
    """Trains a model of a method that learns with the paper's optimiser; the last epoch is kept.

    Each epoch gets its own data seed (`epoch_seed`), and the prompt and
    optimizer state are saved after every epoch, so `resume=True` continues
    an interrupted run from its last checkpoint to the same final weights.

    Args:
        model: a classifier that learns (`CoOp`, `CoCoOp`, ...), built (and to be compiled) under the
            distribution strategy's scope when there is one.
        dataset: the few-shot `ImageDataset` view to train on.
        config: a `RunConfig`.
        seed: the run's seed.
        image_size: input side.
        checkpoint_dir: folder of the per-epoch checkpoints.
        log_dir: TensorBoard folder, or None.
        resume: continue from the last checkpoint in `checkpoint_dir`.
        write_files: write checkpoints and logs (False on non-chief workers).
        training: the training settings each checkpoint records (see
            `save_prompt`).
        log: function for progress lines.
        record: function for lines meant for the run's log file alone (the
            epoch lines `log` does not get, see `EpochLines`), or None.

    Returns:
        The logs (loss, accuracy) of each epoch trained here, as a list of dicts.
    """
    config = config.for_method(model.method)
    images = len(dataset.train)
    drop_remainder = images >= config.batch_size  # as Dassl's training loader
    steps_per_epoch = images // config.batch_size if drop_remainder else 1
    xla = uses_xla(config.jit_compile, model.clip)
    if xla:
        log("  training and evaluation steps compiled with XLA (--no-jit-compile to turn off)")
    model.compile(
        optimizer=paper_optimizer(
            steps_per_epoch, config.epochs, config.lr, config.momentum,
            config.weight_decay, config.warmup_epochs, config.warmup_lr,
        ),
        jit_compile=xla,
    )
    checkpoints = EpochCheckpoints(checkpoint_dir, training, keep=config.keep_checkpoints)
    # Only the chief's files count: another worker may not see them, or hold older ones.
    start = checkpoints.resume(model, log) if resume and write_files else 0
    strategy = model.distribute_strategy
    if spans_workers(strategy):
        # Every worker starts from the chief's epoch, weights, optimizer and resume variables
        # (PromptSRC's aggregation sums), or they would part ways.
        model.optimizer.build(model.trainable_variables)
        variables = list(model.trainable_variables) + list(model.optimizer.variables) + resume_variables(model)
        start, *values = from_chief(strategy, [np.int64(start), *variables])
        start = int(start)
        for variable, value in zip(variables, values):
            variable.assign(value)
    if start:
        log(f"  resumed after epoch {start} from {checkpoints.path(start) if write_files else 'the chief'}")
    verbose = progress_verbosity()
    callbacks = [EpochLines(config.epochs, log if verbose == 0 else None, record)]
    if log_dir and write_files:
        callbacks.append(EpochTensorBoard(log_dir, update_freq="epoch"))
    if write_files:
        callbacks.append(_SaveEachEpoch(checkpoints))
    callbacks.append(keras.callbacks.TerminateOnNaN())
    if start >= config.epochs:
        return []
    # One pipeline per epoch, its images a function of (seed, epoch) alone: in
    # order (parallel decoding may otherwise reorder them) and the same on every
    # pass (a distribution strategy may start an iterator more than once). A
    # single fit reads them: the iterator carries on across epochs when
    # steps_per_epoch is set.
    data = functools.reduce(
        lambda first, then: first.concatenate(then),
        [
            dataset.to_tf_dataset(
                "train", config.batch_size, training=True, image_size=image_size,
                seed=epoch_seed(seed, epoch), deterministic=True,
                drop_remainder=drop_remainder, reshuffle_each_iteration=False,
                crop_scale=config.crop_scale, flip=config.flip,
            )
            for epoch in range(start, config.epochs)
        ],
    )
    result = model.fit(
        data, initial_epoch=start, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
        callbacks=callbacks, verbose=verbose,
    )
    losses = result.history.get("loss", [])
    if len(losses) < config.epochs - start or not all(map(math.isfinite, losses)):
        raise FloatingPointError(
            f"Training diverged (loss {losses[-1] if losses else 'nan'}); lower --lr, or use "
            "float32 precision."
        )
    return [dict(zip(result.history, values)) for values in zip(*result.history.values())]


class _SaveEachEpoch(keras.callbacks.Callback):
    def __init__(self, checkpoints):
        super().__init__()
        self.checkpoints = checkpoints

    def on_epoch_end(self, epoch, logs=None):
        if math.isfinite((logs or {}).get("loss", 0.0)):  # never checkpoint a diverged model
            self.checkpoints.save(epoch + 1, self.model)


def learning_rate(optimizer):
    """The optimizer's learning rate now: its schedule's value at the next step."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's own
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class EpochLines(keras.callbacks.Callback):
    """One line per epoch, "epoch 3/100: loss 1.2345, accuracy 56.2500, lr 0.002, 1.2 s": every
    epoch to `record`, and to `log` at most `MAX_EPOCH_LINES` of them (evenly spaced, the
    last one always).

    Args:
        epochs: the run's epochs.
        log: function for the epoch lines shown (None: none, as under Keras' progress bar).
        record: function for the others (the run's log file), or None.
    """

    def __init__(self, epochs, log=None, record=None):
        super().__init__()
        self.epochs = epochs
        self.log = log
        self.record = record
        self.every = max(1, math.ceil(epochs / MAX_EPOCH_LINES))

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()
        self._learning_rate = learning_rate(self.model.optimizer)

    def on_epoch_end(self, epoch, logs=None):
        values = ", ".join(f"{name} {float(value):.4f}" for name, value in (logs or {}).items())
        line = (f"  epoch {epoch + 1}/{self.epochs}: {values}, lr {self._learning_rate:.4g}, "
                f"{time.time() - self._started:.1f} s")
        if self.log is not None and ((epoch + 1) % self.every == 0 or epoch + 1 == self.epochs):
            self.log(line)
        elif self.record is not None:
            self.record(line)


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, whose `epoch_learning_rate` is the one the epoch's steps used.

    Keras logs the optimizer's learning rate after the epoch's last step, which a schedule
    stepped per epoch (`WarmupCosineSchedule`) has already moved to the next epoch's: the
    warm-up epoch would show the peak rate.
    """

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._learning_rate = learning_rate(self.model.optimizer)

    def _collect_learning_rate(self, logs):
        logs = super()._collect_learning_rate(logs)
        if "learning_rate" in logs:
            logs["learning_rate"] = self._learning_rate
        return logs
