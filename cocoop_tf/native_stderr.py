"""Lines that native libraries write straight to the terminal, held back where they are noise.

TensorFlow's native libraries print lines such as "oneDNN custom operations
are on", "Could not find cuda drivers" and "This TensorFlow binary is
optimized to use available CPU instructions" to file descriptor 2 while they
load, before any log level applies, and libjpeg prints "Improper call to
JPEG library" when it meets a truncated file that we are about to report
ourselves, and LiteRT announces its XNNPACK delegate. Python cannot intercept them, so descriptor 2 is pointed at a file
for the duration and the lines are then dropped, or shown if the work fails.
"""

import contextlib
import os
import re
import sys
import tempfile

_START_UP = re.compile(
    rb"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    rb"|Could not find cuda drivers|cpu_feature_guard|To enable the following instructions"
    rb"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
)

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


def import_tensorflow():
    """Imports TensorFlow (once) without its start-up notices.

    TF_CPP_MIN_LOG_LEVEL, when unset, becomes 2 so that later informational
    lines and warnings of the C++ runtime stay quiet too (errors still show;
    set the variable to 0 to see everything); under the `cocoop-tf` command
    it becomes 3, which also drops the "failed call to cuInit" error that
    every machine without a GPU prints.
    """
    if "tensorflow" in sys.modules:
        return
    command_line = os.path.basename(sys.argv[0] if sys.argv else "") == "cocoop-tf"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if command_line else "2")
    with held_back(_START_UP):
        import tensorflow  # noqa: F401
