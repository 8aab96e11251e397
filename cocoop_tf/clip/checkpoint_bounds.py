"""Size checks of checkpoint files, made before anything they declare is allocated.

A checkpoint states sizes (a zip member's uncompressed length, a pickled
string's length, a storage's element count) and readers allocate what is
stated before they find out whether the bytes exist. Each check here
compares what a file declares with what it holds, so a small hostile file
is refused in a line instead of costing gigabytes.
"""

import io
import mmap
import os
import pickle
import pickletools
import zipfile
import zlib

from cocoop_tf.clip.convert import CheckpointError

# Float weights barely compress, so a checkpoint zip whose members inflate to
# much more than the file is a zip bomb; the slack covers small files.
MAX_INFLATION = 4
SLACK_BYTES = 1 << 20

# Bytes per element of the storage classes PyTorch pickles.
STORAGE_ITEMSIZES = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
}


def check_zip_sizes(path):
    """Refuses a zip whose members declare more bytes than the file can hold.

    Python's `zipfile` and PyTorch's reader both stop at a member's declared
    size, so bounding the declared sizes bounds what reading inflates.

    Args:
        path: a zip file (a `torch.save` or TorchScript checkpoint).

    Raises:
        CheckpointError: the zip is damaged or declares too much.
    """
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{path!r} is a damaged zip file ({error}).") from None
    declared = sum(member.file_size for member in members)
    if declared > MAX_INFLATION * size + SLACK_BYTES:
        largest = max(members, key=lambda member: member.file_size)
        raise CheckpointError(
            f"Refused to read {path!r}: its members declare {declared:,} bytes "
            f"uncompressed ({largest.filename}: {largest.file_size:,}) in a "
            f"{size:,}-byte file, which no checkpoint needs (a zip bomb or a "
            "damaged file). Use the original checkpoint file."
        )


def read_zip_member(archive, name, path):
    """A member's bytes, with damage reported as a `CheckpointError` naming `path`.

    Args:
        archive: an open `zipfile.ZipFile` whose sizes `check_zip_sizes` checked.
        name: the member's name.
        path: the file, for the error.
    """
    try:
        return archive.read(name)
    except KeyError:
        raise CheckpointError(f"{path!r} lacks its member {name!r}.") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise CheckpointError(f"{path!r}: its member {name!r} is damaged ({error}).") from None


def check_pickle_lengths(data, path):
    """Refuses a pickle any of whose declared lengths runs past its end.

    Python's unpickler allocates a pickled string's declared length before
    reading it; walking the opcodes first (which reads, never allocates,
    what is declared) proves every length fits in `data`.

    Args:
        data: the pickle, bytes or a memory map positioned at its start.
        path: the file, for the error.

    Returns:
        The offset just past the pickle's STOP opcode.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    start = stream.tell()
    end = start
    try:
        for opcode, _, position in pickletools.genops(stream):
            end = position + 1 if opcode.name == "STOP" else end
    except ValueError as error:
        raise CheckpointError(f"{path!r} holds a damaged pickle ({error}).") from None
    stream.seek(start)
    return end


class _Anything:
    """Whatever a scanned pickle builds: accepts every operation, holds nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _Global:
    """A name a scanned pickle mentions; calling it builds nothing."""

    def __init__(self, module, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        return _Anything()


class _StorageScanner(pickle.Unpickler):
    """Collects the storages a legacy `torch.save` pickle declares, running nothing."""

    def __init__(self, file):
        super().__init__(file)
        self.storages = {}

    def find_class(self, module, name):
        return _Global(module, name)

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            _, storage_type, key, _, numel = pid[:5]
            itemsize = STORAGE_ITEMSIZES.get(getattr(storage_type, "name", None))
            if itemsize is None or not isinstance(numel, int) or numel < 0:
                raise ValueError(f"unreadable storage reference {pid!r:.80}")
            self.storages[key] = numel * itemsize
        return _Anything()


def check_legacy_torch_sizes(path):
    """Refuses a pre-zip `torch.save` file whose storages declare more than it holds.

    PyTorch allocates each storage at its declared size before reading it; a
    legacy file stores every storage's bytes after its pickles, so their sum
    cannot exceed the file.

    Args:
        path: a file in PyTorch's legacy (pickle protocol 2) format.

    Raises:
        CheckpointError: the file is damaged or declares more than it holds.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            # Magic number, protocol version and system information, then the object.
            for _ in range(3):
                data.seek(check_pickle_lengths(data, path))
            check_pickle_lengths(data, path)
            scanner = _StorageScanner(data)
            scanner.load()
        except CheckpointError:
            raise
        except Exception as error:
            raise CheckpointError(
                f"{path!r} is not a readable PyTorch checkpoint ({type(error).__name__}: "
                f"{error})."
            ) from None
    declared = sum(scanner.storages.values())
    if declared > size:
        raise CheckpointError(
            f"Refused to read {path!r}: its tensors declare {declared:,} bytes of "
            f"storage but the file has {size:,} bytes (damaged or hostile). Use the "
            "original checkpoint file."
        )


def check_view_bytes(view_bytes, storage_bytes, path):
    """Refuses tensors that together hold more than twice their storages.

    A pickle can rebuild many tensors over one storage at a few bytes each;
    a state dict's tensors each own their storage, or share it at most with
    a tied twin.

    Args:
        view_bytes: the bytes of all the rebuilt tensors.
        storage_bytes: the bytes of the distinct storages behind them.
        path: the file, for the error.
    """
    if view_bytes > 2 * storage_bytes + SLACK_BYTES:
        raise CheckpointError(
            f"Refused to read {path!r}: its tensors repeat their stored data "
            f"({view_bytes:,} bytes of tensors over {storage_bytes:,} bytes of "
            "storage), which no state dict does. Use the original checkpoint file."
        )
