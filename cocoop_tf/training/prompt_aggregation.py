"""PromptSRC's Gaussian prompt aggregation (GPA): the final prompt is a weighted mean over epochs.

The weights of epoch `e` (1-based) of `N` are a Gaussian's density at `e`,
normalised to sum to 1: with PromptSRC's mean 15 and std 1 over 20 epochs,
the prompts of epochs 13 to 17 make up 99% of the result, and the noisy
early (and overfitted last) epochs little of it.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from cocoop_tf.clip.prompts import shown


def gpa_weights(epochs, mean=15.0, std=1.0):
    """Normalised Gaussian weights of epochs 1..`epochs`: `g(e) / sum(g)`.

    `g` is the density of N(`mean`, `std`^2), as PromptSRC's trainer computes
    it. Its constant factor cancels in the normalisation, so the weights are
    computed from the exponent alone (no underflow to 0/0 for epochs far
    from the mean).

    Args:
        epochs: the number of training epochs, N >= 1.
        mean: the Gaussian's mean, in epochs (PromptSRC's 15).
        std: its standard deviation, in epochs, > 0 (PromptSRC's 1).

    Returns:
        float64 array `[epochs]`, summing to 1.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a whole number of epochs, at least 1; got {shown(epochs)}.")
    for name, value in (("gpa_mean (--gpa-mean)", mean), ("gpa_std (--gpa-std)", std)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {shown(value)}.")
    if std <= 0:
        raise ValueError(f"gpa_std (--gpa-std) must be greater than 0, got {shown(std)}.")
    exponent = -0.5 * ((np.arange(1, epochs + 1, dtype=np.float64) - mean) / std) ** 2
    weights = np.exp(exponent - exponent.max())
    return weights / weights.sum()


class GaussianPromptAggregation(keras.callbacks.Callback):
    """Ends training with the Gaussian-weighted sum of every epoch's trainable weights.

    After epoch `e` (1-based) the model's running sums (`model.gpa_sums`, one
    float32 variable per trainable weight, as `PromptSRC` holds them) grow
    by `w[e - 1]` times the trainable weights at the end of that epoch, with
    `w = gpa_weights(epochs, mean, std)`; at the end of the last epoch the
    trainable weights take the sums' values. The sums start at zero when
    training starts from epoch 0; a fit resumed at a later epoch
    (`initial_epoch > 0`) keeps them, so a checkpoint that restores the sums
    with the weights (`model.resume_variables`) gives the same final prompt
    as an uninterrupted run.

    The last epoch's weights are replaced in its `on_epoch_end`: put this
    callback before any callback that saves the model at the end of an epoch
    (`PromptSRC.fit` adds it first), so the last checkpoint holds the
    aggregated prompt. Validation during `fit` runs before `on_epoch_end`, so
    the last epoch's validation numbers are those of its own weights.

    Args:
        epochs: the fit's total number of epochs, N (the last epoch is N).
        mean: the Gaussian's mean, in epochs.
        std: its standard deviation, in epochs.

    Example:
    ```python
    weights = cocoop_tf.training.gpa_weights(20, mean=15.0, std=1.0)  # [20], summing to 1
    assert 0.99 < weights[12:17].sum() < 0.995  # epochs 13 to 17 make up the prompt
    # PromptSRC.fit adds it itself; by hand, it goes before any checkpoint callback:
    aggregation = cocoop_tf.training.GaussianPromptAggregation(20, mean=15.0, std=1.0)
    # model.fit(train_ds, epochs=20, callbacks=[aggregation, checkpoints])
    ```
    """

    def __init__(self, epochs, mean=15.0, std=1.0):
        super().__init__()
        self.epoch_weights = gpa_weights(epochs, mean, std)
        self.epochs = int(epochs)
        self.mean = float(mean)
        self.std = float(std)
        self._first_epoch = True

    def _pairs(self):
        sums = getattr(self.model, "gpa_sums", None)
        if sums is None:
            raise ValueError(
                f"GaussianPromptAggregation needs a model that holds its running sums (PromptSRC's "
                f"gpa_sums); {type(self.model).__name__} holds none."
            )
        variables = list(self.model.trainable_weights)
        if [tuple(s.shape) for s in sums] != [tuple(v.shape) for v in variables]:
            raise ValueError(
                f"The model's gpa_sums have shapes {[tuple(s.shape) for s in sums]}, but its trainable "
                f"weights {[tuple(v.shape) for v in variables]}: only the prompts may train (keep the "
                "backbone frozen)."
            )
        return list(zip(sums, variables))

    def on_train_begin(self, logs=None):
        self._pairs()  # refuses a model that cannot be aggregated before any step
        planned = (self.params or {}).get("epochs")
        if planned is not None and planned > self.epochs:
            raise ValueError(
                f"GaussianPromptAggregation(epochs={self.epochs}) in a fit of {planned} epochs: the "
                f"prompt would be aggregated at epoch {self.epochs} and then trained on. Give it the "
                "fit's epochs."
            )
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch and epoch == 0:  # a fresh run; a resumed one keeps its restored sums
            for total, _ in self._pairs():
                total.assign(ops.zeros(total.shape, total.dtype))
        self._first_epoch = False

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        if number > self.epochs:
            return
        weight = float(self.epoch_weights[number - 1])
        pairs = self._pairs()
        for total, variable in pairs:
            total.assign_add(weight * ops.cast(variable, total.dtype))
        if number == self.epochs:
            for total, variable in pairs:
                variable.assign(ops.cast(total, variable.dtype))
