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
import pickle
import zipfile

import numpy as np

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


def _rebuild_tensor(storage, offset, size, stride, *_):
    if not size:
        return np.array(storage[offset])
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * storage.itemsize for s in stride)
    )
    return np.ascontiguousarray(view)


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, path):
        super().__init__(file)
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (_Module,), {})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
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
        data = self.archive.read(f"{self.prefix}data/{key}")
        dtype = _STORAGE_DTYPES.get(storage_type)
        if dtype is None:
            raise CheckpointError(f"{self.path!r}: unsupported storage type {storage_type!r}.")
        if dtype == "bfloat16":  # the high halves of float32 values
            bits = np.frombuffer(data, np.uint16)[:numel].astype(np.uint32) << 16
            return bits.view(np.float32)
        return np.frombuffer(data, dtype)[:numel]


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
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointError(f"{path!r} is a zip file without a TorchScript data.pkl.")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() != b"little":
            raise CheckpointError(f"{path!r} stores big-endian tensors, which are not supported.")
        with archive.open(pickles[0]) as f:
            root = _TensorUnpickler(f, archive, prefix, path).load()
    tensors = {}
    _flatten(root, "", tensors)
    return tensors
