import contextlib
import os
import resource
import subprocess
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from cocoop_tf.clip.backbone import CLIP_MEAN
from cocoop_tf.clip.backbone import CLIP_STD


def max_relative_difference(actual, expected):
    """max |actual - expected| over max |expected|: the error relative to the scale."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def normalized_nchw(images):
    """The reference models' input: CLIP-normalised, channels first."""
    x = (np.asarray(images, np.float32) / 255.0 - np.array(CLIP_MEAN, np.float32)) / np.array(
        CLIP_STD, np.float32
    )
    return np.transpose(x, (0, 3, 1, 2)).copy()


def randomize_torch_module(module, seed):
    """Gives every parameter a distinct random value (layer norms included)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if name.endswith("logit_scale"):
                parameter.fill_(4.6052)
            elif "norm" in name or "ln_" in name or "layer_norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                parameter.copy_(base + 0.1 * noise)
            else:
                parameter.copy_(0.05 * noise)
    return module


# What TensorFlow's C++ runtime and Keras print unasked, and what no command may show.
NOISE = ("I0000", "E0000", "W0000", "oneDNN", "cuInit", "absl::", "cpu_feature_guard",
         "shuffle=True", "Traceback")


def user_environment():
    """The environment a user's command runs in: without the TF_CPP_MIN_LOG_LEVEL set above."""
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def assert_quiet(result):
    """A finished command printed no start-up line, Keras warning or traceback."""
    output = result.stdout + result.stderr
    assert not [word for word in NOISE if word in output], output[-3000:]


@pytest.fixture(autouse=True)
def _seeded():
    """Each test draws the same numbers whichever tests ran before it in its worker."""
    keras.utils.set_random_seed(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@contextlib.contextmanager
def memory_limit(headroom=1 << 30):
    """Address space capped at what the process maps now plus `headroom` bytes.

    An allocation bomb inside raises MemoryError here instead of exhausting
    the machine; the cap is lifted on exit.
    """
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + headroom, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def cli_here(capsys, monkeypatch):
    """`cocoop-tf` in this process, with its exit status and what it printed (a process of
    its own adds TensorFlow's start-up, seconds, and nothing else to check)."""
    from cocoop_tf.cli import main

    def run(*args, env=None):
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr("warnings.showwarning", warnings.showwarning)  # main replaces it
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit:  # an argument error, refused before the command starts
            code = exit.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run
