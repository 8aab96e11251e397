"""Imports TensorFlow without the C++ start-up notices it writes to the terminal.

TensorFlow's native libraries print lines such as "oneDNN custom operations
are on", "Could not find cuda drivers" and "This TensorFlow binary is
optimized to use available CPU instructions" straight to file descriptor 2
while they load, before any log level applies. They are held back in a file
during the import and dropped; any other line is shown, and everything is
shown if the import fails. TF_CPP_MIN_LOG_LEVEL, when unset, becomes 2 so
that later informational lines and warnings of the C++ runtime stay quiet
too (errors still show; set the variable to 0 to see everything); under the
`cocoop-tf` command it becomes 3, which also drops the "failed call to
cuInit" error that every machine without a GPU prints.
"""

import os
import re
import sys
import tempfile

_NOTICES = re.compile(
    rb"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    rb"|Could not find cuda drivers|cpu_feature_guard|To enable the following instructions"
    rb"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
)


def import_tensorflow():
    """Imports TensorFlow (once), holding back its start-up notices."""
    if "tensorflow" in sys.modules:
        return
    command_line = os.path.basename(sys.argv[0] if sys.argv else "") == "cocoop-tf"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if command_line else "2")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2: import plainly
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            import tensorflow  # noqa: F401

            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().splitlines(keepends=True)
            shown = lines if failed else [line for line in lines if not _NOTICES.search(line)]
            if shown:
                sys.stderr.flush()
                os.write(2, b"".join(shown))
