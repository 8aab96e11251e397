"""Commands for test_resume_faults.py that need a process of their own (a real signal).

    python resume_fault_scripts.py sigterm_writing_result COCOOP-TF-ARGS...

runs `cocoop-tf COCOOP-TF-ARGS` and sends the process SIGTERM while the
first `result.json` is written (its data beside it, not yet renamed).
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def sigterm_writing_result(args):
    from cocoop_tf.cli import main

    replace = os.replace

    def replace_after_sigterm(source, target):
        if str(target).endswith("result.json"):
            os.kill(os.getpid(), signal.SIGTERM)  # handled at the next line of Python
        replace(source, target)

    os.replace = replace_after_sigterm
    return main(args)


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    sys.exit({"sigterm_writing_result": sigterm_writing_result}[command](arguments))
