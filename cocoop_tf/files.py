"""Writing files and folders whole, with the permissions of the user's umask.

A file written here appears complete or not at all (written beside its
destination, then renamed), so a full disk or a killed process never leaves
a truncated checkpoint behind. Python's temporary files and folders are
private (0600 and 0700); what is written here gets the permissions a plain
`open` or `os.makedirs` would give, so a TF Serving process of another user
can read an export.
"""

import os
import stat
import tempfile

# A staging file is `.<name>.<random>.partial` beside its destination: hidden, and named
# so that `remove_staging` tells it from every other file.
STAGING_SUFFIX = ".partial"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, data):
    """Writes `data` to `path` atomically (a temporary file beside it, then a rename).

    Args:
        path: the file to write; its folder is created if missing.
        data: bytes.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor, staging = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=STAGING_SUFFIX, dir=folder
    )
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(staging, 0o666 & ~_umask())
        os.replace(staging, path)
    except BaseException:  # a full disk, Ctrl-C or SIGTERM: no staging file left behind
        if os.path.exists(staging):
            os.remove(staging)
        raise


def write_text(path, text):
    """Writes UTF-8 text to `path` atomically; see `write_bytes`."""
    write_bytes(path, text.encode("utf-8"))


def is_staging(name):
    """Whether a file name is one of `write_bytes`'s staging files."""
    return name.startswith(".") and name.endswith(STAGING_SUFFIX) and name.count(".") >= 3


def remove_staging(folder):
    """Deletes the staging files a killed process (SIGKILL, power loss) left under `folder`.

    Only call it while no other process writes there (e.g. holding the
    folder's lock).

    Args:
        folder: searched with its subfolders; symbolic links are not followed.

    Returns:
        The paths removed.
    """
    removed = []
    for where, _, names in os.walk(os.fspath(folder)):
        for name in names:
            if is_staging(name):
                path = os.path.join(where, name)
                try:
                    os.remove(path)
                    removed.append(path)
                except FileNotFoundError:
                    pass
    return removed


def save_safetensors(path, tensors, metadata=None):
    """Writes a safetensors file atomically, with umask permissions.

    Args:
        path: the `.safetensors` file.
        tensors: dict from name to NumPy array.
        metadata: optional dict of strings.
    """
    from safetensors.numpy import save

    write_bytes(path, save(tensors, metadata=metadata))


def file_kind(mode):
    """What a `stat` mode that is not a regular file names, for messages ("a folder", ...).

    Reading a named pipe blocks until a writer comes, reading a device such
    as /dev/zero never ends: such files are refused by what they are, unopened.
    """
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "a special file"


def make_public_folder(path):
    """Gives a folder made by `tempfile.mkdtemp` the permissions `os.makedirs` gives."""
    os.chmod(path, 0o777 & ~_umask())
