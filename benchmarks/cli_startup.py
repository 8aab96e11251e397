"""Start-up of the command line: wall time and peak memory of commands that need no TensorFlow.

    python benchmarks/cli_startup.py               # 5 runs of each, the median
    python benchmarks/cli_startup.py --repeats 3

Each command runs in a fresh process, as a user runs it; its peak resident
memory is the child's own `ru_maxrss` (from `os.wait4`). `--help`, an
argument error and `--version` should answer without importing TensorFlow;
`python -c "import cocoop_tf"` and a TensorFlow import are shown for
comparison.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "cocoop-tf --help": ["cocoop-tf", "--help"],
    "cocoop-tf base2new --help": ["cocoop-tf", "base2new", "--help"],
    "cocoop-tf base2new --bakcbone x": ["cocoop-tf", "base2new", "--bakcbone", "x"],
    "cocoop-tf --version": ["cocoop-tf", "--version"],
    'python -c "import cocoop_tf"': [sys.executable, "-c", "import cocoop_tf"],
    'python -c "import cocoop_tf; cocoop_tf.CoOp"': [sys.executable, "-c", "import cocoop_tf; cocoop_tf.CoOp"],
}


def measure(command):
    """(seconds, peak MB, exit status) of one run in a fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, process.returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (default: 5)")
    args = parser.parse_args()
    if shutil.which("cocoop-tf") is None:
        sys.exit("cocoop-tf is not on PATH: install the package (pip install -e .) first.")
    print(f"{'command':<46} {'exit':>4} {'wall s':>7} {'peak MB':>8}   (median of {args.repeats})")
    for name, command in COMMANDS.items():
        runs = [measure(command) for _ in range(args.repeats)]
        seconds = statistics.median(run[0] for run in runs)
        peak = statistics.median(run[1] for run in runs)
        print(f"{name:<46} {runs[-1][2]:>4} {seconds:>7.2f} {peak:>8.0f}")


if __name__ == "__main__":
    main()
