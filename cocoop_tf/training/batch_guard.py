"""Stopping training on a bad batch before it changes any weight, in eager, graph and XLA modes.

One NaN pixel makes the loss NaN, and one step later every trained weight is
NaN; a label outside the class range does the same, or (under XLA, which
drops graph assertions, and on GPUs) trains on a clamped label without a
word. So every train and test step also reports, as plain outputs that XLA
keeps, how many pixels of its batch are not finite and how many labels are
out of range (summed over replicas). `BatchGuard`, which the classifiers
add to every `fit` and `evaluate`, copies the trained weights and the
optimizer's state before each batch, reads the report and the loss after
it, and on a problem puts the copy back and raises an error that names it.
"""

import math

import keras
import numpy as np
import tensorflow as tf

PROBLEMS = "batch_problems"


def batch_problems(images, labels, num_classes):
    """int32 `[2]`: non-finite values in `images`, labels outside `[0, num_classes)`.

    Summed over the replicas of a distribution strategy, so every replica
    reports the whole global batch.
    """
    images = tf.convert_to_tensor(images)
    labels = tf.convert_to_tensor(labels)
    bad_pixels = tf.reduce_sum(tf.cast(~tf.math.is_finite(tf.cast(images, tf.float32)), tf.int32))
    bad_labels = tf.reduce_sum(tf.cast((labels < 0) | (labels >= num_classes), tf.int32))
    problems = tf.stack([bad_pixels, bad_labels])
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        problems = context.all_reduce(tf.distribute.ReduceOp.SUM, problems)
    return problems


def in_range(labels, num_classes):
    """Labels clipped into `[0, num_classes)`, so that no loss op fails or reads out of bounds.

    Only used together with `batch_problems`: a batch with clipped labels is
    reported and undone.
    """
    labels = tf.convert_to_tensor(labels)
    return tf.clip_by_value(labels, tf.zeros([], labels.dtype), tf.cast(num_classes - 1, labels.dtype))


class BatchGuard(keras.callbacks.Callback):
    """Undoes a training step on a bad batch and stops with an error naming the problem.

    Added by `CLIPClassifier.fit` and `evaluate`; not needed by hand. With
    `steps_per_execution > 1` the weights go back to where they were before
    the execution that held the bad batch.

    Args:
        num_classes: the model's number of classes, for the messages.
    """

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self._epoch = 0
        self._saved = None

    def _variables(self):
        optimizer = getattr(self.model, "optimizer", None)
        return list(self.model.trainable_variables) + list(getattr(optimizer, "variables", []))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._saved = [np.array(v) for v in self._variables()]

    def on_train_batch_end(self, batch, logs=None):
        problem = self._problem(logs, training=True)
        if problem is not None:
            error, message = problem
            for variable, value in zip(self._variables(), self._saved):
                variable.assign(value)
            self.model.stop_training = True
            raise error(
                f"Batch {batch + 1} of epoch {self._epoch + 1}: {message}. Training stopped; the "
                "weights are those before this batch."
            )

    def on_test_batch_end(self, batch, logs=None):
        problem = self._problem(logs, training=False)
        if problem is not None:
            error, message = problem
            raise error(f"Evaluation batch {batch + 1}: {message}.")

    def on_epoch_end(self, epoch, logs=None):
        (logs or {}).pop(PROBLEMS, None)

    def _problem(self, logs, training):
        """`(exception class, message)` for a bad batch, else None."""
        logs = logs if logs is not None else {}
        problems = logs.pop(PROBLEMS, None)
        if problems is not None:
            bad_pixels, bad_labels = (int(n) for n in np.asarray(problems).reshape(-1)[:2])
            if bad_pixels:
                return ValueError, (
                    f"{bad_pixels} image value(s) are NaN or infinite; check the images (and any "
                    "preprocessing that can divide by zero)"
                )
            if bad_labels:
                return ValueError, (
                    f"{bad_labels} label(s) are outside [0, {self.num_classes}) for this model's "
                    f"{self.num_classes} classes; check the labels or set_classnames()"
                )
        loss = logs.get("loss")
        if training and loss is not None and not math.isfinite(float(loss)):
            return FloatingPointError, (
                f"the loss is {float(loss)} with finite inputs; lower the learning rate, or "
                "train in float32"
            )
        return None
