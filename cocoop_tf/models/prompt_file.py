"""Prompt files: the learned weights of a method and its config, without the backbone.

A prompt file is a safetensors file of the model's trainable weights (by
variable path) whose metadata (format `cocoop_tf.prompt/2`) holds:

- `method`: the model's class name (a registered method);
- `config`: the model's `get_config()` without the backbone, as JSON, so
  that `from_prompt` is `from_config` with the backbone given;
- `backbone_widths`: the backbone's token and feature widths, as JSON;
- `backbone`: the fingerprint of the backbone's weights;
- `backbone_source` (optional): the name or path the backbone was loaded
  from (`load_clip`'s `source`), to name it in errors;
- `training` (optional): how the prompt was trained, as JSON.

Files of format `cocoop_tf.prompt/1` (one string per setting) are still read.

A prompt file may come from anyone, so it is read as hostile input: only a
regular file is opened; its header is read by its declared sizes, which must
fit the file, before any tensor is; tensors must be floating point; and
every setting is checked against the tensors in the file and the backbone
before a model is built. Nothing in a prompt file runs as code.
"""

import errno
import inspect
import json
import os
import stat
import struct
import warnings

import ml_dtypes
import numpy as np

from cocoop_tf.clip.backbone import fingerprint
from cocoop_tf.clip.prompts import shown
from cocoop_tf.files import file_kind
from cocoop_tf.files import save_safetensors
from cocoop_tf.models.registry import METHODS
from cocoop_tf.models.registry import get_method

PROMPT_FORMAT = "cocoop_tf.prompt/2"
_FORMAT_1 = "cocoop_tf.prompt/1"
# Learned weights sit near token embeddings (about 0.01-1); anything this
# large only comes from a damaged file or a diverged run.
MAX_PROMPT_VALUE = 1e6
# The header holds the config, class names included: 16 MiB is some 500 000
# class names, far more than any dataset has.
MAX_HEADER_BYTES = 16 << 20
# The tensor types a prompt holds (the variables' dtypes); integers are refused, not cast.
_DTYPES = {
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
_REQUIRED_1 = ("method", "n_ctx", "ctx_dim", "vis_dim", "class_specific", "ctx_init", "classnames")
# Keys of `keras.Model.get_config` that describe the Keras object, not the method.
_KERAS_KEYS = ("clip", "name", "trainable", "dtype")
_AGAIN = "The file was edited or damaged: use the file save_prompt wrote, or train again."


def backbone_widths(clip):
    """The widths a prompt's shapes depend on."""
    return {"ctx_dim": int(clip.text_encoder.embedding_dim), "vis_dim": int(clip.projection_dim)}


def backbone_source(clip, training=None):
    """The name or path a backbone was loaded from, when known (`load_clip` records it)."""
    source = getattr(clip, "source", None)
    if source is None and isinstance(training, dict):
        source = training.get("backbone")  # the --backbone of a run
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else None


def write_prompt(path, model, backbone, training=None):
    """Writes `model`'s trainable weights and config (see the module docstring)."""
    config = {k: v for k, v in model.get_config().items() if k not in _KERAS_KEYS}
    metadata = {
        "format": PROMPT_FORMAT,
        "method": type(model).__name__,
        "config": json.dumps(config),
        "backbone_widths": json.dumps(backbone_widths(model.clip)),
        "backbone": backbone,
    }
    source = backbone_source(model.clip, training)
    if source is not None:
        metadata["backbone_source"] = source
    if training is not None:
        metadata["training"] = json.dumps(training)
    save_safetensors(path, {v.path: np.asarray(v) for v in model.trainable_weights}, metadata=metadata)


def read_prompt(path):
    """Reads a prompt file: (tensors by variable path, metadata).

    In the metadata returned, "config", "backbone_widths" and "training" (when
    the file records it) are parsed, and "classnames" is the config's.

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: naming the file and what is wrong with it.
    """
    with _open(path) as f:
        entries, metadata = _read_header(path, f)
        return _read_tensors(path, f, entries), metadata


def read_prompt_header(path):
    """A prompt file's tensor shapes and metadata (as `read_prompt`), reading no tensor.

    Returns:
        (dict from variable path to shape tuple, metadata).
    """
    with _open(path) as f:
        entries, metadata = _read_header(path, f)
    return {name: entry[1] for name, entry in entries.items()}, metadata


def load_prompt(model, path, force=False, backbone_checked=False):
    """Loads a prompt file into `model`, after checking that it fits (see `CLIPClassifier.load_prompt`).

    `backbone_checked`: `model_for_prompt` checked the backbone (and warned) already.
    """
    with _open(path) as f:
        entries, metadata = _read_header(path, f)
        _check_fits(
            model, path, metadata, {name: entry[1] for name, entry in entries.items()}, force, backbone_checked
        )
        tensors = _read_tensors(path, f, entries)
    for name, value in tensors.items():
        if not np.isfinite(value).all() or np.abs(value).max(initial=0) > MAX_PROMPT_VALUE:
            raise ValueError(
                f"Prompt checkpoint {str(path)!r}: {name} holds NaN, infinite or absurd values "
                f"(largest magnitude {np.nanmax(np.abs(value.astype(np.float32)), initial=0):g}; training "
                f"leaves them far below {MAX_PROMPT_VALUE:g}). The file is damaged or came from a run "
                "that diverged; use an earlier epoch's checkpoint or train again."
            )
    variables = {v.path: v for v in model.trainable_weights}
    for name, value in tensors.items():
        variables[name].assign(value.astype(variables[name].dtype))


def model_for_prompt(cls, clip, path, classnames=None, force=False, **kwargs):
    """`cls.from_prompt`: the model its prompt file records, on `clip`, with the file's weights.

    Every setting the file records is checked against the method, the
    tensors in the file and the backbone before the model is built, so a
    damaged or hostile file costs nothing.
    """
    shapes, metadata = read_prompt_header(path)
    if metadata["method"] != cls.__name__:
        recorded = METHODS.get(_method_name(metadata["method"]))
        how = f" (on the command line: --method {recorded.method}, or no --method)" if recorded else ""
        raise ValueError(
            f"{str(path)!r} holds {_a(metadata['method'])} prompt, not {_a(cls.__name__)} one: load it "
            f"with {metadata['method']}.from_prompt{how}."
        )
    # The backbone first: another backbone's vocabulary or widths would fail the
    # build below with an error that does not say the prompt is not its own.
    given = fingerprint(clip)
    _check_backbone(path, metadata, clip, given, force, stacklevel=4)
    config = {**metadata["config"], **kwargs}
    if classnames is not None:
        config["classnames"] = list(classnames)
    _check_config(cls, path, config, shapes)
    try:
        model = cls.from_config({**config, "clip": clip})
    except ValueError as error:  # a setting the method refuses: named with the file it came from
        raise ValueError(f"Prompt checkpoint {str(path)!r}: {error}") from None
    except TypeError as error:  # a setting of the wrong type that no check above knows
        raise ValueError(
            f"Prompt checkpoint {str(path)!r}: its config does not fit {cls.__name__} ({error}). {_AGAIN}"
        ) from None
    model._backbone_fingerprint = given  # computed once (see `backbone_fingerprint`)
    load_prompt(model, path, force=force, backbone_checked=True)
    return model


def model_from_prompt(clip, path, classnames=None, force=False):
    """The model of any registered method from a prompt file, on `clip`.

    Args:
        clip: the backbone the prompt was trained on.
        path: a prompt file written by `save_prompt`.
        classnames: the classes to classify; default the training classes.
        force: see `CLIPClassifier.load_prompt`.
    """
    method = read_prompt_header(path)[1]["method"]
    try:
        cls = get_method(method)
    except ValueError:
        raise ValueError(
            f"{str(path)!r} holds a {method!r} prompt, a method this installation does not know "
            f"(methods: {', '.join(METHODS)})."
        ) from None
    return cls.from_prompt(clip, path, classnames=classnames, force=force)


# --- checks against the model ------------------------------------------------------


def _a(name):
    """The name with its article: "a CoOp", "an IVLP"."""
    return f"{'an' if name[:1] in 'AEIOU' else 'a'} {name}"


def _method_name(class_name):
    return next((name for name, cls in METHODS.items() if cls.__name__ == class_name), None)


def _check_backbone(path, metadata, clip, given, force, stacklevel):
    """Refuses a prompt of another backbone, naming the one it records and the one given.

    Other widths are refused even with `force` (the shapes cannot fit); the same
    widths but other weights (`given` is `clip`'s fingerprint) unless `force`.
    """
    trained_on = metadata.get("backbone")
    widths = backbone_widths(clip)
    differing = [key for key, value in widths.items() if metadata["backbone_widths"].get(key) != value]
    if not differing and trained_on == given:
        return
    recorded = metadata.get("backbone_source")
    if recorded is None and isinstance(metadata.get("training"), dict):
        recorded = metadata["training"].get("backbone")  # files written before backbone_source
    recorded = recorded if isinstance(recorded, str) else None
    theirs = _backbone_named(recorded, trained_on)
    ours = _backbone_named(backbone_source(clip), given)
    if differing:
        key = differing[0]
        raise ValueError(
            f"Prompt checkpoint {str(path)!r} was trained on another backbone ({theirs}) than "
            f"this one ({ours}): its {key} is {metadata['backbone_widths'].get(key)} but this "
            f"model's is {widths[key]}. Load it on the backbone it was trained on"
            f"{_flag(recorded)}, or a model built the same way on a backbone of the same widths."
        )
    problem = (
        f"Prompt checkpoint {str(path)!r} was trained on another backbone ({theirs}) than this "
        f"one ({ours}), and its context means nothing on other weights"
        if trained_on else
        f"Prompt checkpoint {str(path)!r} does not record the backbone it was trained on "
        f"(this one is {ours})"
    )
    if not force:
        raise ValueError(
            f"{problem}. Load the backbone it was trained on{_flag(recorded)}, or pass force=True "
            "(--force on the command line) to load it anyway."
        )
    warnings.warn(f"{problem}; loading it anyway (force).", stacklevel=stacklevel)


def _backbone_named(source, weights):
    """"random_tiny, weights fingerprint 0123...": a backbone as a prompt file or `load_clip` names it."""
    fingerprint_text = f"weights fingerprint {weights}" if weights else "no weights fingerprint recorded"
    return f"{shown(source) if len(repr(source)) > 60 else source}, {fingerprint_text}" if source else fingerprint_text


def _flag(source):
    return f" (--backbone {source})" if source and len(repr(source)) <= 60 else ""


def _check_config(cls, path, config, shapes):
    """The recorded settings are the method's, and agree with the tensors (before any is built)."""
    settings = _settings_of(cls)
    for key, value in config.items():
        if key not in settings:
            owners = [c.__name__ for c in METHODS.values() if key in _settings_of(c)]
            whose = f"a setting of {' and '.join(owners)}, " if owners else "no setting of any method, "
            raise ValueError(
                f"Prompt checkpoint {str(path)!r} holds {_a(cls.__name__)} prompt whose config has "
                f"{key}={shown(value)}: {whose}not of {cls.__name__}. {_AGAIN}"
            )
    names = config.get("classnames")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"Prompt checkpoint {str(path)!r}: its class names are {shown(names)}, not a list of "
            f"names. {_AGAIN}"
        )
    try:
        cls.check_prompt_config(config, shapes)
    except ValueError as error:
        raise ValueError(f"Prompt checkpoint {str(path)!r}: {error} {_AGAIN}") from None


def _settings_of(cls):
    """The settings a method's constructor takes by name (what its config records)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("self", "clip")
    }


def _check_fits(model, path, metadata, shapes, force, backbone_checked=False):
    if metadata["method"] != type(model).__name__:
        raise ValueError(
            f"Prompt checkpoint {str(path)!r} does not fit this model: it holds "
            f"{_a(metadata['method'])} prompt, this model is {_a(type(model).__name__)}."
        )
    if not backbone_checked:
        _check_backbone(path, metadata, model.clip, model.backbone_fingerprint, force, stacklevel=5)
    variables = {v.path: v for v in model.trainable_weights}
    if set(variables) != set(shapes):
        raise ValueError(
            f"Prompt checkpoint {str(path)!r} holds {sorted(shapes)}, this model "
            f"learns {sorted(variables)}."
        )
    for name, shape in shapes.items():
        if shape != tuple(variables[name].shape):
            raise ValueError(
                f"Prompt checkpoint {str(path)!r}: {name} has shape {shape}, "
                f"this model needs {tuple(variables[name].shape)}."
            )


# --- reading the file -------------------------------------------------------------


def _open(path):
    """Opens a regular file (or a link to one) for reading; anything else is refused unopened.

    A named pipe would block the open (and the read) forever, a device
    such as /dev/zero never ends.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(
                f"Prompt checkpoint not found: {path!r} is a symlink to a missing file."
            ) from None
        raise FileNotFoundError(f"Prompt checkpoint not found: {path!r}.") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError(
                f"Prompt checkpoint {path!r} is a symlink loop (links that point back to each "
                "other); give the prompt file itself."
            ) from None
        raise OSError(f"Cannot read the prompt checkpoint {path!r}: {error.strerror}.") from None
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"Prompt checkpoint {path!r} is {file_kind(mode)}, not a regular file; give the "
            ".safetensors file that save_prompt (or train) wrote."
        )
    # Without blocking, in case it was swapped for a pipe since; checked again once open.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    f = os.fdopen(descriptor, "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise ValueError(f"Prompt checkpoint {path!r} is not a regular file.")
    return f


def _read_header(path, f):
    """The tensors' (dtype, shape, start, end) by name and the checked metadata.

    Each declared size is checked against the file's before anything of
    that size is read: the header's length, and each tensor's bytes, which
    must tile the data after the header exactly, as safetensors writes them.
    """
    def bad(problem):
        return ValueError(f"{str(path)!r} is not a readable prompt checkpoint: {problem}.")

    size = os.fstat(f.fileno()).st_size
    start = f.read(8)
    if len(start) < 8:
        raise bad(f"it is {size} bytes, too short for a safetensors file")
    (length,) = struct.unpack("<Q", start)
    if length > size - 8:
        raise bad(f"its header declares {length} bytes but the file has {size - 8} after its first 8 "
                  "(truncated?)")
    if length > MAX_HEADER_BYTES:
        raise bad(f"its header declares {length} bytes, more than a prompt's header ever needs "
                  f"({MAX_HEADER_BYTES})")
    try:
        header = json.loads(f.read(length).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise bad(f"its header is not valid JSON ({str(error)[:100]})") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("its metadata is not a map of strings")
    entries, end = {}, 0
    for name, entry in sorted(header.items(), key=lambda item: _offsets(item[1])):
        dtype, shape, (first, last) = _entry(name, entry, bad)
        if first != end or last - first != int(np.prod(shape, dtype=object)) * dtype.itemsize:
            raise bad(f"tensor {name!r} of shape {list(shape)} does not fit its data offsets [{first}, {last}]")
        entries[name] = (dtype, shape, 8 + length + first, 8 + length + last)
        end = last
    if end != size - 8 - length:
        raise bad(f"its tensors declare {end} bytes of data but the file holds {size - 8 - length} "
                  "(truncated?)")
    return entries, _checked_metadata(path, metadata)


def _no_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a key appears twice ({sorted(k for k in keys if keys.count(k) > 1)[0]!r})")
    return dict(pairs)


def _offsets(entry):
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    return tuple(offsets) if isinstance(offsets, list) and all(_is_int(o) for o in offsets) else (-1,)


def _entry(name, entry, bad):
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise bad(f"tensor {name!r} is not described by dtype, shape and data_offsets")
    if entry["dtype"] not in _DTYPES:
        raise bad(
            f"tensor {name!r} holds {entry['dtype']!r} values; a prompt's learned weights are "
            f"floating point ({', '.join(_DTYPES)}), and other types are not cast"
        )
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise bad(f"tensor {name!r} has the shape {shown(shape)}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) and o >= 0 for o in offsets):
        raise bad(f"tensor {name!r} has the data offsets {shown(offsets)}")
    return _DTYPES[entry["dtype"]], tuple(shape), offsets


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _read_tensors(path, f, entries):
    tensors = {}
    for name, (dtype, shape, first, last) in entries.items():
        value = np.empty(shape, dtype)  # of the size checked against the file's
        f.seek(first)
        if f.readinto(value.reshape(-1).view(np.uint8)) != last - first:  # the file shrank since
            raise ValueError(f"{str(path)!r} is not a readable prompt checkpoint: it is truncated.")
        tensors[name] = value
    return tensors


def _checked_metadata(path, metadata):
    if metadata.get("format") == _FORMAT_1:
        metadata = _from_format_1(path, metadata)
    elif metadata.get("format") != PROMPT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a cocoop-tf prompt checkpoint.")
    metadata = dict(metadata)
    missing = [key for key in ("method", "config", "backbone_widths") if key not in metadata]
    if missing:
        raise ValueError(
            f"Prompt checkpoint {str(path)!r} lacks {', '.join(missing)} in its metadata; "
            "it was not written by save_prompt. Train it again, or write it with save_prompt."
        )
    if not metadata["method"].isidentifier() or len(metadata["method"]) > 100:
        raise ValueError(
            f"Prompt checkpoint {str(path)!r} names the method {shown(metadata['method'])}. {_AGAIN}"
        )
    for key in ("config", "backbone_widths", "training"):
        if isinstance(metadata.get(key), str):
            metadata[key] = _json(path, key, metadata[key])
    if not isinstance(metadata["config"], dict) or "classnames" not in metadata["config"]:
        raise ValueError(f"Prompt checkpoint {str(path)!r}: its config names no classes.")
    for key in ("backbone_widths", "training"):
        if key in metadata and not isinstance(metadata[key], dict):
            raise ValueError(
                f"Prompt checkpoint {str(path)!r}: its {key!r} metadata is {shown(metadata[key])}, "
                f"not a JSON object. {_AGAIN}"
            )
    metadata["classnames"] = metadata["config"]["classnames"]
    return metadata


def _json(path, key, text):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError(f"Prompt checkpoint {str(path)!r}: its {key!r} metadata is not valid JSON.") from None


def _from_format_1(path, metadata):
    """Format 1 held each setting of CoOp or CoCoOp as a string; turned into a config."""
    missing = [key for key in _REQUIRED_1 if key not in metadata]
    if missing:
        raise ValueError(
            f"Prompt checkpoint {str(path)!r} lacks {', '.join(missing)} in its metadata; "
            "it was not written by save_prompt. Train it again, or write it with save_prompt."
        )
    classnames = _json(path, "classnames", metadata["classnames"])
    try:
        config = {
            "classnames": classnames,
            "n_ctx": int(metadata["n_ctx"]),
            "ctx_init": metadata["ctx_init"] or None,
        }
        if metadata["method"] == "CoOp":
            config["class_specific"] = metadata["class_specific"] == "True"
        if "reduction" in metadata:
            config["reduction"] = int(metadata["reduction"])
        widths = {"ctx_dim": int(metadata["ctx_dim"]), "vis_dim": int(metadata["vis_dim"])}
    except ValueError:
        raise ValueError(
            f"Prompt checkpoint {str(path)!r}: a number in its metadata is not a whole number. {_AGAIN}"
        ) from None
    upgraded = {"method": metadata["method"], "config": config, "backbone_widths": widths}
    for key in ("backbone", "backbone_source", "training"):
        if key in metadata:
            upgraded[key] = metadata[key]
    return upgraded
