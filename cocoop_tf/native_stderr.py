"""Lines that native libraries write straight to the terminal, held back where they are noise.

TensorFlow's native libraries print lines such as "oneDNN custom operations
are on", "Could not find cuda drivers" and "This TensorFlow binary is
optimized to use available CPU instructions" to file descriptor 2 while they
load, before any log level applies, and libjpeg prints "Improper call to
JPEG library" when it meets a truncated file that we are about to report
ourselves, and LiteRT announces its XNNPACK delegate. Python cannot
intercept them, so descriptor 2 is pointed at a file for the duration and
the lines are then dropped, or shown if the work fails.

This module imports nothing heavy: `cocoop_tf/import_hooks.py` applies
`tensorflow_starting` to whichever import first loads TensorFlow.
"""

import contextlib
import glob
import os
import re
import sys
import tempfile

_START_UP = re.compile(
    rb"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    rb"|Could not find cuda drivers|cpu_feature_guard|To enable the following instructions"
    rb"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
)
# Where there is no GPU device, CUDA's failure to start says only that.
_NO_GPU = re.compile(rb"failed call to cuInit")

# LiteRT's interpreter announces its default CPU delegate on every start.
LITERT_NOTICES = re.compile(rb"Created TensorFlow Lite XNNPACK delegate")


@contextlib.contextmanager
def held_back(noise=None, show_on_error=True):
    """Holds back what native code writes to descriptor 2 inside the block.

    Args:
        noise: a compiled bytes regex; lines that match it are dropped and the
            others shown after the block. None: drop every line.
        show_on_error: if the block raises, show every line.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().splitlines(keepends=True)
            if not (failed and show_on_error):
                lines = [] if noise is None else [line for line in lines if not noise.search(line)]
            if lines:
                sys.stderr.flush()
                os.write(2, b"".join(lines))


def _no_gpu_device():
    """True when the machine has no NVIDIA device node, so CUDA cannot start."""
    return not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg"))  # dxg: WSL2's GPU


@contextlib.contextmanager
def tensorflow_starting():
    """The block imports TensorFlow: its start-up notices are held back.

    TF_CPP_MIN_LOG_LEVEL, when unset, becomes 2 so that later informational
    lines and warnings of the C++ runtime stay quiet too (errors still show;
    set the variable to 0 to see everything, start-up notices included);
    under the `cocoop-tf` command it becomes 3 (the command reports its
    errors itself, in one line). Then `query_devices` runs.
    """
    command_line = os.path.basename(sys.argv[0] if sys.argv else "") == "cocoop-tf"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if command_line else "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        yield
        return
    with held_back(_START_UP):
        yield
    query_devices()


def query_devices():
    """Where there is no GPU, TensorFlow's first device query, without its cuInit error.

    On a machine without a GPU device, the first device query prints "failed
    call to cuInit", an error that says only that there is no GPU; it is made
    here, where that line is held back. Where a GPU device exists nothing is
    queried early (CUDA starts when the user's code needs it) and a failing
    cuInit shows, since it then says why the GPU is not used. Does nothing
    before TensorFlow is imported, and nothing more once it has queried.
    """
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is None or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" or not _no_gpu_device():
        return
    with held_back(_NO_GPU):
        tensorflow.config.list_physical_devices("GPU")


def import_tensorflow():
    """Imports TensorFlow (once) without its start-up notices (see `tensorflow_starting`)."""
    if "tensorflow" in sys.modules:
        return
    with tensorflow_starting():
        import tensorflow  # noqa: F401
