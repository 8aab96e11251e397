"""The output folder of one run: never two runs in it, never two processes, never a broken file.

Every file is written whole (`cocoop_tf.files`), a lock keeps a second
process out while a run works in the folder (a dead process's lock is taken
over), and `--resume` recovers from files that a full disk or a killed
process of an older version left empty or truncated: `run.json` is written
again, a damaged few-shot record is sampled again, a damaged epoch
checkpoint (or one that does not fit) falls back to the epoch before it, a
damaged `result.json` makes that run evaluate again, and staging files a
killed process left are removed.

`run.json` identifies the run: its settings, and the identity of its data,
prompt files and backbone weights (`cocoop_tf.protocols.identity`). The
files of each run record what made them too, so a folder whose `run.json`
was lost is never continued under other settings.
"""

import json
import os
import socket
import time

from cocoop_tf.files import remove_staging
from cocoop_tf.files import write_text

RUN_FILE = "run.json"
LOG_FILE = "log.txt"
LOCK_FILE = ".lock"
# The JSON files of a run are a few kB; one far larger is not ours and is not read.
MAX_JSON_BYTES = 64 << 20

# What a differing setting of run.json means, for the error.
_MEANING = {
    "data": "the data: its class names and the images of each split, wherever the folder lies",
    "backbone_weights": "the weights --backbone loads",
    "prompt_files": "the contents of the --prompts files",
}


class RunLog:
    """The progress lines of a run, shown by `echo` and kept in the run folder's `log.txt`.

    Lines come before the folder is known to be the run's (checking the images, taking the
    folder): they wait in memory, and `open` writes them first. The file is appended to,
    across `--resume`, one whole line per write, each after a line saying when the
    process started. Called as a function, it is a `log`.

    Args:
        echo: function showing a line (`print`).
    """

    def __init__(self, echo=print):
        self.echo = echo
        self._waiting = []
        self._descriptor = None

    def __call__(self, line=""):
        self.echo(line)
        self.record(line)

    def record(self, line=""):
        """Keeps a line in the log file alone (the epoch lines not shown)."""
        if self._descriptor is None:
            self._waiting.append(str(line))
            return
        try:
            os.write(self._descriptor, (str(line) + "\n").encode("utf-8", "replace"))
        except OSError:  # a full disk must not stop the run the log is about
            pass

    def open(self, folder):
        """Appends to `folder`'s log file from now on, the lines so far first."""
        self._descriptor = os.open(os.path.join(folder, LOG_FILE), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        waiting, self._waiting = self._waiting, []
        self.record(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}, process {os.getpid()} on {socket.gethostname()}")
        for line in waiting:
            self.record(line)

    def close(self):
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


class RunFolderError(ValueError):
    """The output folder holds another run, this run without --resume, or a working process."""


def read_json(path):
    """The JSON value in `path`, or None when the file is empty, truncated, not JSON, or not
    a regular file of at most `MAX_JSON_BYTES` (a FIFO would block, a device never end)."""
    if not os.path.isfile(path) or os.path.getsize(path) > MAX_JSON_BYTES:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None


class RunFolder:
    """The output folder of one run; never mixes two runs.

    Layout: `run.json` (the protocol and settings), `splits/` (the few-shot
    choices), `runs/<method>_seed<seed>/` (per-epoch `checkpoints/`,
    `tensorboard/`, the final `prompt.safetensors`, `predictions/*.npz` and
    `result.json`), the reports `results.{json,md,csv,png}`, `log.txt` (what
    the console showed, and every epoch's losses; see `RunLog`), and `.lock`
    while a process works in it. Call `close` when the run ends.

    Args:
        path: the folder.
        settings: a JSON-able dict that identifies the run.
        resume: continue the run already in the folder.
        write_files: False on non-chief workers of a cluster.
        log: function for progress lines.
        check_files: called with no arguments when a run is resumed, under the
            lock and before a damaged `run.json` is written again; raises
            `RunFolderError` when the folder's own files (results,
            checkpoints) belong to other settings.
    """

    def __init__(self, path, settings, resume=False, write_files=True, log=print, check_files=None):
        self.path = os.fspath(path)
        self.write_files = write_files
        self._lock = None
        if not write_files:
            # A non-chief worker: the folder is the chief's, which may or may not have written
            # run.json yet, or may be on a disk this worker does not see. Only the chief checks.
            return
        run_file = os.path.join(self.path, RUN_FILE)
        ours = os.path.exists(run_file) or os.path.isdir(os.path.join(self.path, "runs"))
        if not ours and os.path.isdir(self.path) and [
            name for name in os.listdir(self.path) if not name.startswith(".")
        ]:
            raise RunFolderError(
                f"Output folder {self.path!r} is not empty and holds no cocoop-tf run; "
                "choose a new or empty --output folder."
            )
        if not ours:
            os.makedirs(self.path, exist_ok=True)
            self._take_lock(log)
            write_text(run_file, json.dumps(settings, indent=2))
            return
        self._take_lock(log)
        try:
            stored = read_json(run_file) if os.path.exists(run_file) else None
            if stored is None:
                if not resume:
                    raise RunFolderError(
                        f"{run_file} is missing, empty or truncated (a full disk, or a killed "
                        "process?). Pass --resume to continue the run in this folder: the file "
                        "is written again from this command's settings."
                    )
                if check_files:  # before run.json says these settings are the folder's
                    check_files()
                log(f"{run_file} was damaged; written again from this command's settings")
                write_text(run_file, json.dumps(settings, indent=2))
            elif stored != settings:
                differing = _differences(stored, settings)
                meanings = [_MEANING[key] for key in _MEANING if any(
                    d == key or d.startswith(key + ".") for d in differing
                )]
                raise RunFolderError(
                    f"Output folder {self.path!r} holds another run (different "
                    f"{', '.join(differing)}{''.join(f'; {m}' for m in meanings)}). Give the "
                    "settings and data it was started with, choose a new --output folder, or "
                    "delete this one to start over."
                )
            elif not resume:
                raise RunFolderError(
                    f"Output folder {self.path!r} already holds this run. Pass --resume to "
                    "continue it (finished parts are kept), or choose a new --output folder."
                )
            elif check_files:
                check_files()
            # Half-written files of a process killed outright (SIGKILL), which never renamed them.
            for staging in remove_staging(self.path):
                log(f"Removed {staging}, left half-written by a killed process")
        except BaseException:
            self.close()
            raise

    def _take_lock(self, log):
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        path = os.path.join(self.path, LOCK_FILE)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        holder = os.pread(descriptor, 200, 0).decode("utf-8", "replace").strip()
        try:
            # The kernel drops the lock when its process dies, however it dies.
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            raise RunFolderError(
                f"Output folder {self.path!r} is in use by another process ({holder or 'unknown'}). "
                "Wait for it to finish (then --resume), or choose another --output folder."
            ) from None
        if holder:
            log(f"Taking over {path} from {holder}, which is no longer running")
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"process {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._lock = descriptor

    def close(self):
        """Releases the folder's lock."""
        if self._lock is not None:
            os.ftruncate(self._lock, 0)
            os.close(self._lock)
            self._lock = None

    def run_dir(self, method, seed):
        return os.path.join(self.path, "runs", method if seed is None else f"{method}_seed{seed}")

    def relative(self, path):
        return os.path.relpath(path, self.path)


def _differences(stored, settings):
    keys = []
    for key in sorted(set(stored) | set(settings)):
        if isinstance(stored.get(key), dict) and isinstance(settings.get(key), dict):
            keys += [f"{key}.{k}" for k in _differences(stored[key], settings[key])]
        elif stored.get(key) != settings.get(key):
            keys.append(key)
    return keys
