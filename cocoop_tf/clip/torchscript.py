"""Reading the tensors of a TorchScript archive (OpenAI's `ViT-B-16.pt`) without running it.

`torch.jit.load` compiles and runs the code stored in an archive (a module's
`__setstate__` runs while it loads), so an archive from an untrusted source
can do anything the user can. The tensors need none of that: an archive is a
zip file whose `data.pkl` pickles the module tree (objects of classes named
`__torch__.*`, with their attributes as state) and whose `data/<key>` files
hold the raw storages. This reader unpickles `data.pkl` with an unpickler
that knows exactly three things (module objects as plain records, ordered
dicts, and tensors rebuilt from storages as NumPy arrays) and refuses any
other name the pickle mentions, so nothing in the file is ever executed.
PyTorch is not needed.
"""

import collections
import io
import math
import pickle
import zipfile

import numpy as np

from cocoop_tf.clip.checkpoint_bounds import STORAGE_ITEMSIZES
from cocoop_tf.clip.checkpoint_bounds import check_pickle_lengths
from cocoop_tf.clip.checkpoint_bounds import check_view_bytes
from cocoop_tf.clip.checkpoint_bounds import check_zip_sizes
from cocoop_tf.clip.checkpoint_bounds import read_zip_member
from cocoop_tf.clip.convert import CheckpointError

# The storage classes a TorchScript archive names, and their NumPy types.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def is_torchscript_archive(path):
    """Whether `path` is a zip file holding TorchScript code (`<name>/code/...`)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


class _Module:
    """A `__torch__.*` object from the pickle: its state, nothing else."""

    state = None

    def __setstate__(self, state):
        self.state = state


# Beyond any real tensor's dimension or stride; keeps the size arithmetic small.
_MAX_DIM = 1 << 48


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, path):
        super().__init__(file)
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages = {}  # key -> array, each storage read once
        self.view_bytes = 0

    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (_Module,), {})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self.rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise CheckpointError(
            f"Refused to read {self.path!r}: its pickled data names {module}.{name}, which "
            "holds no tensor and could run code. Only module records and tensors are read "
            "from TorchScript archives."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path!r}: unknown storage reference {pid!r:.80}.")
        _, storage_type, key, _, numel = pid[:5]
        dtype = _STORAGE_DTYPES.get(storage_type) if isinstance(storage_type, str) else None
        if dtype is None:
            raise CheckpointError(f"{self.path!r}: unsupported storage type {storage_type!r:.40}.")
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise CheckpointError(f"{self.path!r}: unreadable storage reference {pid!r:.80}.")
        if key not in self.storages:
            self.storages[key] = self._read_storage(key, dtype, storage_type, numel)
        storage = self.storages[key]
        if storage.size != numel:
            raise CheckpointError(
                f"{self.path!r}: storage {key!r} is referenced with {numel} and "
                f"{storage.size} elements."
            )
        return storage

    def _read_storage(self, key, dtype, storage_type, numel):
        name = f"{self.prefix}data/{key}"
        nbytes = numel * STORAGE_ITEMSIZES[storage_type]
        try:
            declared = self.archive.getinfo(name).file_size
        except KeyError:
            raise CheckpointError(f"{self.path!r} lacks the storage {name!r}.") from None
        # Checked before reading: the member must hold what the pickle declares.
        if declared < nbytes:
            raise CheckpointError(
                f"{self.path!r}: storage {name!r} declares {numel} elements "
                f"({nbytes:,} bytes) but holds {declared:,} bytes."
            )
        data = read_zip_member(self.archive, name, self.path)[:nbytes]
        if len(data) < nbytes:
            raise CheckpointError(f"{self.path!r}: storage {name!r} is truncated.")
        if dtype == "bfloat16":  # the high halves of float32 values
            bits = np.frombuffer(data, np.uint16).astype(np.uint32) << 16
            return bits.view(np.float32)
        return np.frombuffer(data, dtype)

    def rebuild_tensor(self, storage, offset, size, stride, *_):
        """The tensor a pickle describes, after checking it lies inside its storage.

        `as_strided` trusts its arguments: an offset, size or stride past the
        storage would read the process's memory (or crash it).
        """
        shape = tuple(size) if isinstance(size, (tuple, list)) else None
        steps = tuple(stride) if isinstance(stride, (tuple, list)) else None
        if (
            not isinstance(storage, np.ndarray)
            or not _is_int(offset)
            or shape is None
            or steps is None
            or len(shape) != len(steps)
            or not all(_is_int(n) and 0 <= n < _MAX_DIM for n in shape + steps + (offset,))
        ):
            raise CheckpointError(
                f"{self.path!r}: a tensor has an unreadable offset, size or stride "
                f"({offset!r:.40}, {size!r:.80}, {stride!r:.80})."
            )
        numel = math.prod(shape)
        last = offset + sum((n - 1) * step for n, step in zip(shape, steps))
        if (numel or not shape) and last >= storage.size:
            raise CheckpointError(
                f"{self.path!r}: a tensor of size {list(shape)}, stride {list(steps)} "
                f"and offset {offset} runs past its storage of {storage.size} elements "
                "(a damaged or hostile file)."
            )
        # Checked before copying: views can repeat one storage many times over.
        self.view_bytes += numel * storage.itemsize
        check_view_bytes(
            self.view_bytes, sum(s.nbytes for s in self.storages.values()), self.path
        )
        if not shape:
            return np.array(storage[offset])
        if not numel:
            return np.zeros(shape, storage.dtype)
        view = np.lib.stride_tricks.as_strided(
            storage[offset:],
            shape=shape,
            strides=tuple(step * storage.itemsize for step in steps),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _flatten(value, prefix, out):
    if isinstance(value, _Module):
        _flatten(value.state, prefix, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                _flatten(item, f"{prefix}{key}.", out)
    elif isinstance(value, np.ndarray):
        out[prefix[:-1]] = value


def read_torchscript_tensors(path):
    """The tensors of a TorchScript archive by attribute path, as `state_dict()` names them.

    Args:
        path: a TorchScript `.pt` file (OpenAI's released CLIP models).

    Returns:
        dict from name (e.g. `"visual.conv1.weight"`) to NumPy array; floats
        come as stored (OpenAI's are float16).

    Raises:
        CheckpointError: the pickle names anything but module records and
            tensors, or the archive is not little-endian.
    """
    path = str(path)
    check_zip_sizes(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointError(f"{path!r} is a zip file without a TorchScript data.pkl.")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in names and read_zip_member(archive, byteorder, path).strip() != b"little":
            raise CheckpointError(f"{path!r} stores big-endian tensors, which are not supported.")
        data = read_zip_member(archive, pickles[0], path)
        check_pickle_lengths(data, path)
        unpickler = _TensorUnpickler(io.BytesIO(data), archive, prefix, path)
        tensors = {}
        try:
            _flatten(unpickler.load(), "", tensors)
        except (CheckpointError, MemoryError):
            raise
        except Exception as error:
            # The unpickler calls nothing but the rebuilders above: what fails is the data.
            raise CheckpointError(
                f"{path!r} holds a damaged pickle ({type(error).__name__}: {error})."
            ) from None
    return tensors
