"""The paper's optimiser against PyTorch's SGD and Dassl's warm-up + cosine schedule."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
from conftest import max_relative_difference

from cocoop_tf.training import CoupledSGD
from cocoop_tf.training import WarmupCosineSchedule
from cocoop_tf.training import paper_optimizer

# The schedule is evaluated in float32, as every Keras learning rate is; late in the
# cosine `1 + cos(.)` is small, which turns float32 rounding of the cosine into a
# relative error of a few 1e-7 on the learning rate.
LR_RTOL = 2e-6
TRAJECTORY_TOLERANCE = 1e-5


class DasslConstantWarmup:
    """Dassl's `ConstantWarmupScheduler` logic around a real torch scheduler.

    Creating it performs one `step()`; while its own `last_epoch < warmup_epoch` a
    step advances its `last_epoch` and writes its lr (`cons_lr` during the warm-up,
    then the successor's current lr); afterwards a step steps the successor.
    """

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr):
        self.optimizer = optimizer
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        self.cons_lr = cons_lr
        self.last_epoch = -1
        self.step()

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.optimizer.param_groups]

    def step(self):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step()
        else:
            self.last_epoch += 1
            for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
                group["lr"] = lr


def torch_scheduler(optimizer, epochs, warmup_epochs, warmup_lr):
    """The reference's scheduler: cosine over `epochs`, wrapped in the constant warm-up."""
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return DasslConstantWarmup(optimizer, cosine, warmup_epochs, warmup_lr)


def torch_epoch_lrs(epochs, lr, warmup_epochs=1, warmup_lr=1e-5, wrap=True):
    """The learning rate of each epoch as the reference's schedulers set it."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)
    if wrap:
        scheduler = torch_scheduler(optimizer, epochs, warmup_epochs, warmup_lr)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    lrs = []
    with warnings.catch_warnings():
        # Stepping a scheduler before any optimizer step only warns.
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(epochs):
            lrs.append(optimizer.param_groups[0]["lr"])
            scheduler.step()
    return np.array(lrs, np.float64)


def keras_step_lrs(schedule, steps):
    return np.array([float(schedule(np.int64(step))) for step in range(steps)], np.float64)


def elementwise_relative_difference(actual, expected):
    return float(np.max(np.abs(actual - expected) / np.abs(expected)))


# ----------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    "epochs, warmup_epochs, steps_per_epoch",
    [(10, 1, 3), (5, 1, 3), (10, 2, 4), (10, 1, 1)],
)
def test_schedule_matches_the_reference_per_step(epochs, warmup_epochs, steps_per_epoch):
    lr, warmup_lr = 0.002, 1e-5
    reference = torch_epoch_lrs(epochs, lr, warmup_epochs, warmup_lr)
    schedule = WarmupCosineSchedule(steps_per_epoch, epochs, lr, warmup_epochs, warmup_lr)
    ours = keras_step_lrs(schedule, epochs * steps_per_epoch)
    # Constant within each epoch, as the reference steps its scheduler per epoch.
    expected = np.repeat(reference, steps_per_epoch)
    assert elementwise_relative_difference(ours, expected) <= LR_RTOL
    assert np.all(ours.reshape(epochs, steps_per_epoch) == ours[::steps_per_epoch, None])
    # Warm-up, then the cosine restarts from the peak lr.
    assert ours[0] == pytest.approx(warmup_lr, rel=1e-6)
    assert ours[warmup_epochs * steps_per_epoch] == pytest.approx(lr, rel=1e-6)


def test_paper_schedule_values():
    # Epoch 0 warms up at 1e-5, epoch 1 is at the peak, epoch e >= 1 is the cosine
    # after e - 1 of its 10 steps.
    ours = keras_step_lrs(WarmupCosineSchedule(3), 30)[::3]
    expected = [1e-5] + [0.001 * (1 + np.cos(np.pi * k / 10)) for k in range(9)]
    np.testing.assert_allclose(ours, expected, rtol=LR_RTOL)


@pytest.mark.parametrize("epochs", [10, 5])
def test_schedule_without_warmup_is_plain_cosine_annealing(epochs):
    reference = torch_epoch_lrs(epochs, 0.002, wrap=False)
    # The warm-up wrapper with no warm-up epoch is a no-op around the cosine.
    np.testing.assert_allclose(torch_epoch_lrs(epochs, 0.002, 0), reference, rtol=1e-12)
    ours = keras_step_lrs(WarmupCosineSchedule(3, epochs, 0.002, warmup_epochs=0), epochs * 3)
    assert elementwise_relative_difference(ours, np.repeat(reference, 3)) <= LR_RTOL


# --------------------------------------------------------------------------- trajectory

STEPS_PER_EPOCH = 3
EPOCHS = 10
STEPS = STEPS_PER_EPOCH * EPOCHS


def problem():
    """A small least-squares problem with three parameter tensors of different shapes.

    `loss = mean((tanh(x @ w + b) * s - y) ** 2)`: non-linear in the parameters,
    yet well conditioned enough that float32 rounding does not grow over the run.
    """
    rng = np.random.default_rng(1)
    data = {
        "x": rng.standard_normal((16, 5)).astype("float32"),
        "y": rng.standard_normal((16, 3)).astype("float32"),
    }
    init = {
        "w": rng.standard_normal((5, 3)).astype("float32"),
        "b": rng.standard_normal((3,)).astype("float32"),
        "s": (1.0 + 0.3 * rng.standard_normal((3,))).astype("float32"),
    }
    return data, init


def loss_fn(data, w, b, s, backend):
    prediction = backend.tanh(data["x"] @ w + b) * s
    if backend is torch:
        return torch.mean((prediction - data["y"]) ** 2)
    return tf.reduce_mean((prediction - data["y"]) ** 2)


def torch_trajectory(lr, scheduled, weight_decay=5e-4):
    """Parameters after each step of torch.optim.SGD, the scheduler stepped per epoch."""
    data, init = problem()
    data = {k: torch.from_numpy(v) for k, v in data.items()}
    params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in init.items()}
    optimizer = torch.optim.SGD(
        list(params.values()),
        lr=lr,
        momentum=0.9,
        weight_decay=weight_decay,
        dampening=0,
        nesterov=False,
    )
    scheduler = torch_scheduler(optimizer, EPOCHS, 1, 1e-5) if scheduled else None
    trajectory, lrs = [], []
    for _ in range(EPOCHS):
        for _ in range(STEPS_PER_EPOCH):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.zero_grad()
            loss_fn(data, *params.values(), backend=torch).backward()
            optimizer.step()
            trajectory.append([p.detach().numpy().copy() for p in params.values()])
        if scheduler is not None:
            scheduler.step()
    return trajectory, np.array(lrs)


def keras_trajectory(optimizer):
    """Parameters after each step of a Keras optimizer, gradients from TensorFlow."""
    data, init = problem()
    data = {k: tf.constant(v) for k, v in data.items()}
    variables = [keras.Variable(v, name=k) for k, v in init.items()]
    trajectory, lrs = [], []
    for _ in range(STEPS):
        lrs.append(float(optimizer.learning_rate))
        with tf.GradientTape() as tape:
            loss = loss_fn(data, *variables, backend=tf)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        trajectory.append([v.numpy() for v in variables])
    return trajectory, np.array(lrs)


def trajectory_difference(actual, expected):
    """The largest scale-relative difference over all steps and parameter tensors."""
    return max(
        max_relative_difference(a, e)
        for step_a, step_e in zip(actual, expected, strict=True)
        for a, e in zip(step_a, step_e, strict=True)
    )


def test_coupled_sgd_constant_lr_matches_torch_sgd():
    expected, _ = torch_trajectory(0.1, scheduled=False)
    ours, _ = keras_trajectory(CoupledSGD(learning_rate=0.1, momentum=0.9, l2=5e-4))
    assert trajectory_difference(ours, expected) <= TRAJECTORY_TOLERANCE
    # The parameters move a lot, so the comparison is not trivially satisfied.
    assert max_relative_difference(expected[-1][0], problem()[1]["w"]) > 0.1


def test_paper_optimizer_matches_torch_sgd_with_the_reference_schedulers():
    expected, torch_lrs = torch_trajectory(0.1, scheduled=True)
    ours, keras_lrs = keras_trajectory(paper_optimizer(STEPS_PER_EPOCH, EPOCHS, lr=0.1))
    assert elementwise_relative_difference(keras_lrs, torch_lrs) <= LR_RTOL
    assert len(set(torch_lrs)) == EPOCHS  # the lr changes every epoch
    assert trajectory_difference(ours, expected) <= TRAJECTORY_TOLERANCE


def test_keras_decoupled_weight_decay_is_not_the_reference():
    expected, _ = torch_trajectory(0.1, scheduled=False)
    builtin, _ = keras_trajectory(keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4))
    # Keras' SGD shrinks the weights outside the momentum, PyTorch adds the L2
    # term to the gradient, where momentum amplifies it.
    assert trajectory_difference(builtin, expected) > 100 * TRAJECTORY_TOLERANCE
    # Without decay the two agree, so the difference is the decay alone.
    no_decay, _ = torch_trajectory(0.1, scheduled=False, weight_decay=0.0)
    plain, _ = keras_trajectory(keras.optimizers.SGD(0.1, momentum=0.9))
    assert trajectory_difference(plain, no_decay) <= TRAJECTORY_TOLERANCE


# ------------------------------------------------------------------------ serialisation


def assert_same_paper_optimizer(restored, original):
    assert isinstance(restored, CoupledSGD)
    assert restored.momentum == original.momentum and restored.l2 == original.l2
    schedule = restored._learning_rate
    assert isinstance(schedule, WarmupCosineSchedule)
    assert schedule.get_config() == original._learning_rate.get_config()
    assert restored.get_config() == original.get_config()


def test_serialize_round_trip():
    original = paper_optimizer(
        7, epochs=5, lr=0.01, momentum=0.8, weight_decay=1e-3, warmup_epochs=2, warmup_lr=1e-4
    )
    assert original._learning_rate.get_config() == {
        "steps_per_epoch": 7,
        "epochs": 5,
        "lr": 0.01,
        "warmup_epochs": 2,
        "warmup_lr": 1e-4,
    }
    serialized = keras.optimizers.serialize(original)
    assert_same_paper_optimizer(keras.optimizers.deserialize(serialized), original)
    assert_same_paper_optimizer(CoupledSGD.from_config(original.get_config()), original)


def test_saved_in_a_keras_file_with_its_state(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 4)).astype("float32")
    y = rng.standard_normal((8, 2)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=paper_optimizer(4, epochs=3, lr=0.1), loss="mse")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)

    loaded = keras.models.load_model(path)
    assert_same_paper_optimizer(loaded.optimizer, model.optimizer)
    # The step counter and the momentum buffers are restored too.
    assert int(loaded.optimizer.iterations) == 4
    for restored, saved in zip(loaded.optimizer.momenta, model.optimizer.momenta, strict=True):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy())
        assert np.any(saved.numpy() != 0)
