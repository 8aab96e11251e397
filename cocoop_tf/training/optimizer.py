"""The paper's optimiser: SGD with coupled L2 weight decay and warm-up + cosine."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cocoop_tf")
class WarmupCosineSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Constant warm-up, then cosine decay, stepped once per epoch.

    Epochs `0..warmup_epochs-1` use `warmup_lr`; epoch `e` after them uses
    `0.5 * lr * (1 + cos(pi * (e - warmup_epochs) / epochs))`, the schedule of
    the reference implementation (its cosine restarts from `lr` after the
    warm-up and counts `epochs` steps, of which the run uses the first ones).

    Args:
        steps_per_epoch: optimizer steps (batches) per epoch.
        epochs: total training epochs.
        lr: peak learning rate.
        warmup_epochs: epochs of constant warm-up.
        warmup_lr: the warm-up learning rate.
    """

    def __init__(self, steps_per_epoch, epochs=10, lr=0.002, warmup_epochs=1, warmup_lr=1e-5):
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_lr = float(warmup_lr)

    def __call__(self, step):
        epoch = ops.floor_divide(ops.cast(step, "int64"), self.steps_per_epoch)
        t = ops.cast(epoch - self.warmup_epochs, "float32")
        cosine = 0.5 * self.lr * (1.0 + ops.cos(math.pi * t / self.epochs))
        return ops.where(epoch < self.warmup_epochs, self.warmup_lr, cosine)

    def get_config(self):
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "lr": self.lr,
            "warmup_epochs": self.warmup_epochs,
            "warmup_lr": self.warmup_lr,
        }


@keras.saving.register_keras_serializable(package="cocoop_tf")
class CoupledSGD(keras.optimizers.Optimizer):
    """SGD with momentum and L2 weight decay exactly as `torch.optim.SGD`.

    `g = grad + weight_decay * w; buf = momentum * buf + g; w -= lr * buf`.
    The decay is added to the gradient before momentum (not decoupled as
    Keras' `weight_decay` is), and the learning rate multiplies the whole
    momentum buffer, so a changing learning rate acts as in PyTorch.

    Args:
        learning_rate: float or `LearningRateSchedule`.
        momentum: momentum factor.
        l2: coefficient of the L2 penalty added to the gradient.
        **kwargs: standard `keras.optimizers.Optimizer` arguments.
    """

    def __init__(self, learning_rate=0.002, momentum=0.9, l2=5e-4, name="coupled_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.l2 = float(l2)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momenta = [
            self.add_variable_from_reference(v, name="momentum") for v in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype) + self.l2 * variable
        buffer = self.momenta[self._get_variable_index(variable)]
        self.assign(buffer, self.momentum * buffer + gradient)
        self.assign_sub(variable, learning_rate * buffer)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "l2": self.l2})
        return config


def paper_optimizer(
    steps_per_epoch,
    epochs=10,
    lr=0.002,
    momentum=0.9,
    weight_decay=5e-4,
    warmup_epochs=1,
    warmup_lr=1e-5,
):
    """The CoOp / CoCoOp optimiser: SGD(0.002, momentum 0.9, L2 5e-4), warm-up + cosine.

    Args:
        steps_per_epoch: batches per epoch (the schedule steps per epoch).
        epochs: training epochs (10 in the paper's base-to-new setting).
        lr: peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 coefficient, added to the gradient as PyTorch does.
        warmup_epochs: epochs at the constant `warmup_lr` first.
        warmup_lr: warm-up learning rate.

    Returns:
        A `CoupledSGD` optimizer with a `WarmupCosineSchedule`.
    """
    schedule = WarmupCosineSchedule(steps_per_epoch, epochs, lr, warmup_epochs, warmup_lr)
    return CoupledSGD(learning_rate=schedule, momentum=momentum, l2=weight_decay)
