"""Putting an export in place whole: readers see the old one or the new one, never a mix.

TF Serving watches a model's base folder and loads a version folder as soon
as it appears, and a device may open a `.tflite` file at any moment. So an
export is written into a hidden staging folder beside its destination (a
name TF Serving ignores: not a number) and moved into place with one rename;
an existing version folder is swapped with the new one in one step
(`renameat2(RENAME_EXCHANGE)` on Linux), since a rename cannot replace a
folder that is not empty.

The process writing a staging folder holds a lock on it (`flock`), which the
kernel drops however the process ends. The next export beside it removes the
staging folders whose writer is gone, so a killed export leaves nothing
behind, and leaves those of an export still running alone.
"""

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
import warnings

PREFIX = ".cocoop-export-"
# Inside a staging folder: the destination's name, and where a replaced
# version waits for its removal.
TARGET_FILE = "target"
OLD = "old"


@contextlib.contextmanager
def staging_folder(parent, target):
    """A locked, hidden folder in `parent` for writing `parent/target`; removed afterwards.

    Stale staging folders of killed exports in `parent` are removed first.

    Args:
        parent: the destination's folder; created if missing.
        target: the destination's name in `parent` (a version number, a
            file name).

    Yields:
        The staging folder's path.
    """
    parent = os.fspath(parent)
    os.makedirs(parent, exist_ok=True)
    remove_stale(parent)
    path, descriptor = _locked_folder(parent)
    try:
        with open(os.path.join(path, TARGET_FILE), "w", encoding="utf-8") as f:
            f.write(target)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if descriptor is not None:
            os.close(descriptor)


def replace_folder(new, path, staging):
    """Moves the folder `new` to `path`, replacing a folder there in one step.

    Where the file system cannot swap two folders, the old folder moves into
    `staging` first, so `path` is missing between two renames; an export
    killed in between gets the old folder back on the next export
    (`remove_stale`).

    Args:
        new: the complete new folder, inside `staging`.
        path: the destination.
        staging: the staging folder from `staging_folder`.
    """
    if not os.path.isdir(path):
        os.rename(new, path)  # atomic, and also replaces an empty folder
        return
    if _exchange(new, path):
        return  # `new` now holds the old folder, removed with `staging`
    warnings.warn(
        f"This file system cannot swap folders in one step: {path!r} is missing for a "
        "moment while it is replaced. To replace a served model without any gap, export "
        "a new version (--version; TF Serving serves the highest)."
    )
    os.rename(path, os.path.join(staging, OLD))
    os.rename(new, path)


def remove_stale(parent):
    """Removes the staging folders in `parent` whose export is no longer running.

    An export killed while it replaced a version folder without a swap
    (see `replace_folder`) has moved the old folder into its staging
    folder: that folder goes back in place if nothing has taken it since.

    Args:
        parent: a folder that exports write into.
    """
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        path = os.path.join(parent, name)
        if not name.startswith(PREFIX) or not os.path.isdir(path) or os.path.islink(path):
            continue
        descriptor = _try_lock(path)
        if descriptor is None:
            continue  # an export still running, or a folder we may not lock
        try:
            old = os.path.join(path, OLD)
            target = _read_target(path)
            if target and os.path.isdir(old) and not os.path.exists(os.path.join(parent, target)):
                os.rename(old, os.path.join(parent, target))
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(descriptor)


def _locked_folder(parent):
    """Makes a staging folder and locks it; returns its path and the lock's descriptor."""
    for _ in range(10):
        path = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
        descriptor = _try_lock(path)
        if descriptor is None:
            if not _can_lock():
                return path, None
            continue  # another export's clean-up took it between mkdtemp and the lock
        # Another export may also have removed it as stale just before the lock.
        try:
            same = os.path.samestat(os.fstat(descriptor), os.stat(path))
        except OSError:
            same = False
        if same:
            return path, descriptor
        os.close(descriptor)
    raise RuntimeError(f"Could not make a staging folder in {parent!r}: other exports keep removing it.")


def _can_lock():
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return False
    return True


def _try_lock(path):
    """An open descriptor holding an exclusive lock on folder `path`, or None."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locks, so nothing is ever taken for stale
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def _read_target(path):
    try:
        with open(os.path.join(path, TARGET_FILE), encoding="utf-8") as f:
            target = f.read(256)
    except OSError:
        return None
    # Only a plain name in the same folder is ever restored.
    return target if target and os.path.basename(target) == target and target not in (".", "..") else None


def _exchange(a, b):
    """Swaps the paths `a` and `b` atomically; False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without it
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # a file system (NFS, some FUSE) or kernel without the swap
    raise OSError(code, os.strerror(code), a, None, b)
