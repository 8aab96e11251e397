"""`load_clip`: a frozen keras-hub CLIP backbone from wherever a user holds CLIP."""

import json
import math
import os
import pickle
import re
import zipfile

import keras_hub
import numpy as np

from cocoop_tf.clip.backbone import CLIPArchitecture
from cocoop_tf.clip.backbone import architecture_of
from cocoop_tf.clip.backbone import build_backbone
from cocoop_tf.clip.backbone import freeze
from cocoop_tf.clip.backbone import random_backbone
from cocoop_tf.clip.checkpoint_bounds import SLACK_BYTES
from cocoop_tf.clip.checkpoint_bounds import check_legacy_torch_sizes
from cocoop_tf.clip.checkpoint_bounds import check_view_bytes
from cocoop_tf.clip.checkpoint_bounds import check_zip_sizes
from cocoop_tf.clip.convert import MAX_BLOCKS
from cocoop_tf.clip.convert import CheckpointError
from cocoop_tf.clip.convert import architecture_from_hf_config
from cocoop_tf.clip.convert import backbone_from_openai
from cocoop_tf.clip.convert import check_not_resnet
from cocoop_tf.clip.convert import check_tensors
from cocoop_tf.clip.convert import hf_tensor_shapes
from cocoop_tf.clip.convert import load_hf_weights
from cocoop_tf.clip.named_backbones import registered_backbones
from cocoop_tf.clip.torchscript import is_torchscript_archive
from cocoop_tf.clip.torchscript import read_torchscript_tensors

# Randomly initialised architectures for tests and benchmarks (no real weights).
RANDOM_CONFIGS = {
    # A small ViT CLIP with the real tokenizer's vocabulary and context.
    "random_tiny": CLIPArchitecture(
        image_size=32, patch_size=8, vision_width=64, vision_layers=2,
        vision_heads=2, vision_mlp_width=256, vocabulary_size=49408,
        context_length=77, text_width=64, text_layers=2, text_heads=2,
        text_mlp_width=256, projection_dim=32,
    ),
    # ViT-B/16's exact shapes.
    "random_vit_b16": CLIPArchitecture(
        image_size=224, patch_size=16, vision_width=768, vision_layers=12,
        vision_heads=12, vision_mlp_width=3072, vocabulary_size=49408,
        context_length=77, text_width=512, text_layers=12, text_heads=8,
        text_mlp_width=2048, projection_dim=512,
    ),
}


def load_clip(
    source,
    *,
    dtype=None,
    vision_heads=None,
    text_heads=None,
    activation="quick_gelu",
    seed=0,
):
    """Loads a frozen CLIP ViT backbone as a `keras_hub.models.CLIPBackbone`.

    `source` may be:
    - a keras-hub preset name such as `"clip_vit_base_patch16"` (downloaded by
      keras-hub, so it needs network) or a local keras-hub preset folder;
    - a Hugging Face `CLIPModel` folder (`config.json` with `model.safetensors`
      or `pytorch_model.bin`), e.g. a downloaded `openai/clip-vit-base-patch16`;
    - an OpenAI / open_clip state dict file: `.pt`/`.pth`/`.bin` (needs PyTorch;
      OpenAI's TorchScript archives such as `ViT-B-16.pt` included) or
      `.safetensors`;
    - `"random_tiny"` or `"random_vit_b16"`: randomly initialised models for
      tests and benchmarks, seeded by `seed`;
    - a name registered with `cocoop_tf.clip.named_backbones.register_backbone`.
      The demo registers `"mini_clip"`: a small CLIP (32 x 32 images, 7.6 M
      parameters) that ships with the package, pretrained by `python -m
      cocoop_tf.demo.pretrain` on MNIST digits and animal silhouettes (see
      `cocoop_tf/demo/MINI_CLIP.md`); for demos and notebooks, not a
      substitute for real CLIP weights.

    The architecture is read from the checkpoint. Every weight is frozen.

    Args:
        source: one of the above, a string or path.
        dtype: optional Keras dtype policy for the backbone's computations.
        vision_heads: OpenAI-layout files only: vision attention heads, if
            not width // 64 (OpenAI's rule; some open_clip models differ).
        text_heads: OpenAI-layout files only: text attention heads.
        activation: OpenAI-layout files only: `"quick_gelu"` for OpenAI's
            models, `"gelu"` for open_clip models trained with plain GELU.
        seed: seed of the random configurations.

    Returns:
        A frozen `keras_hub.models.CLIPBackbone`; its `source` attribute is
        `source` (a prompt file records it).
    """
    source = os.fspath(source)
    named = registered_backbones()
    if source in RANDOM_CONFIGS:
        backbone = random_backbone(RANDOM_CONFIGS[source], seed, dtype)
    elif source in named:
        load, _ = named[source]
        backbone = load(dtype)
    elif os.path.isdir(source):
        backbone = _load_folder(source, dtype)
    elif os.path.isfile(source):
        state_dict = _read_state_dict(source)
        backbone = backbone_from_openai(
            state_dict, vision_heads, text_heads, activation, dtype=dtype
        )
    elif source in keras_hub.models.CLIPBackbone.presets:
        backbone = _load_keras_hub_preset(source, dtype)
    else:
        raise ValueError(
            f"Unknown CLIP source {source!r}: it is not an existing file or "
            "folder, nor a keras-hub CLIP preset "
            f"({', '.join(sorted(keras_hub.models.CLIPBackbone.presets))}), "
            f"nor a random test configuration ({', '.join(RANDOM_CONFIGS)}), "
            f"nor a registered backbone ({_describe(named)}). "
            "Check the spelling or the path."
        )
    backbone = freeze(backbone)
    backbone.source = source  # named in a prompt file, and in its errors on another backbone
    return backbone


def _describe(named):
    """`'name': description, ...` of the registered backbones, for errors."""
    described = [f"{name!r}: {description}" for name, (_, description) in named.items()]
    return ", ".join(described) or "none"


def _load_folder(folder, dtype):
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(
            f"{folder!r} is not a CLIP checkpoint folder: it has no config.json. "
            "Pass a Hugging Face CLIPModel folder, a keras-hub preset folder or "
            "an OpenAI .pt/.safetensors file."
        )
    try:
        with open(config_path, "rb") as f:
            config = json.load(f)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError too
        raise CheckpointError(f"{config_path} is not valid JSON ({error}).") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} holds no JSON object, so it is no model config.")
    if "model_type" in config:
        architecture = architecture_from_hf_config(config)
        tensors = _read_hf_tensors(folder)
        # Before building: the backbone config.json describes must be the one the weights fill.
        check_tensors(architecture, tensors)
        backbone = build_backbone(architecture, dtype=dtype)
        load_hf_weights(backbone, tensors)
        return backbone
    if "registered_name" in config or "class_name" in config:
        _check_preset_folder(folder, config)
        return _load_keras_hub_preset(folder, dtype)
    raise CheckpointError(
        f"{config_path} is neither a Hugging Face config (no 'model_type') nor "
        "a keras-hub preset config (no 'class_name')."
    )


def _check_preset_folder(folder, config):
    """A local keras-hub preset whose config and weights declare no more than its file holds.

    keras-hub builds the model from config.json, then reads each weight at
    the shape model.weights.h5 declares (HDF5 can declare data it does not
    store); both are bounded by the weights file's size first.
    """
    import h5py

    weights = os.path.join(folder, "model.weights.h5")
    if not os.path.isfile(weights):
        return  # keras-hub says what is missing
    size = os.path.getsize(weights)
    try:
        backbone = config["config"]
        vision, text = backbone["vision_encoder"]["config"], backbone["text_encoder"]["config"]
        architecture = CLIPArchitecture(
            image_size=vision["image_shape"][0], patch_size=vision["patch_size"],
            vision_width=vision["hidden_dim"], vision_layers=vision["num_layers"],
            vision_heads=vision["num_heads"], vision_mlp_width=vision["intermediate_dim"],
            vocabulary_size=text["vocabulary_size"], context_length=text["max_sequence_length"],
            text_width=text["hidden_dim"], text_layers=text["num_layers"],
            text_heads=text["num_heads"], text_mlp_width=text["intermediate_dim"],
            projection_dim=backbone["projection_dim"],
        )
    except (KeyError, TypeError, IndexError, ValueError) as error:
        raise CheckpointError(
            f"{folder!r}: config.json is not a CLIPBackbone preset config ({error})."
        ) from None
    parameters = sum(math.prod(shape) for shape in hf_tensor_shapes(architecture).values())
    blocks = max(architecture.vision_layers, architecture.text_layers)
    if blocks > MAX_BLOCKS or parameters > size + SLACK_BYTES:  # a byte each at the least
        raise CheckpointError(
            f"{folder!r}: config.json describes a CLIP of {parameters:,} parameters "
            f"({architecture.vision_layers} + {architecture.text_layers} blocks) but "
            f"model.weights.h5 has {size:,} bytes (damaged or hostile)."
        )
    declared = 0
    try:
        with h5py.File(weights, "r") as f:
            for item in _h5_datasets(f):
                declared += item.size * item.dtype.itemsize
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{weights!r} is not a readable weights file ({error}).") from None
    if declared > size + SLACK_BYTES:
        raise CheckpointError(
            f"Refused to read {weights!r}: its datasets declare {declared:,} bytes but "
            f"the file has {size:,} (damaged or hostile)."
        )


def _h5_datasets(group):
    import h5py

    found = []
    group.visititems(lambda _, item: found.append(item) if isinstance(item, h5py.Dataset) else None)
    return found


def _read_hf_tensors(folder):
    safetensors_path = os.path.join(folder, "model.safetensors")
    if os.path.isfile(safetensors_path):
        return _read_safetensors(safetensors_path)
    torch_path = os.path.join(folder, "pytorch_model.bin")
    if os.path.isfile(torch_path):
        return _read_state_dict(torch_path)
    raise CheckpointError(
        f"{folder!r} has a config.json but no model.safetensors or "
        "pytorch_model.bin; download the weights file too."
    )


def _read_state_dict(path):
    """Reads a state dict file into NumPy float arrays."""
    if path.endswith(".safetensors"):
        state_dict = _read_safetensors(path)
    else:
        state_dict = _read_torch_file(path)
    if isinstance(state_dict.get("state_dict"), dict):  # open_clip training checkpoints
        state_dict = state_dict["state_dict"]
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    check_not_resnet(state_dict)
    return state_dict


# Real CLIP headers are tens of kilobytes; the safetensors library allows 100 MB.
_MAX_SAFETENSORS_HEADER = 16 << 20


def _read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    with open(path, "rb") as f:
        declared = int.from_bytes(f.read(8), "little")
    if declared > _MAX_SAFETENSORS_HEADER:
        raise CheckpointError(
            f"{path!r} is not a readable safetensors file: its header declares "
            f"{declared:,} bytes, more than any CLIP checkpoint's (damaged or hostile)."
        )
    try:
        return load_file(path)
    except SafetensorError as error:
        raise CheckpointError(f"{path!r} is not a readable safetensors file ({error}).") from None
    except TypeError as error:  # a dtype NumPy lacks, e.g. bfloat16
        raise CheckpointError(
            f"{path!r} holds tensors NumPy cannot read ({error}); save it as float32 or "
            "float16."
        ) from None


def _read_torch_file(path):
    if zipfile.is_zipfile(path):
        check_zip_sizes(path)
    elif _is_legacy_torch_file(path):
        check_legacy_torch_sizes(path)
    else:
        raise CheckpointError(f"{path!r} is not a PyTorch checkpoint file.")
    if is_torchscript_archive(path):
        # OpenAI's released .pt files are TorchScript archives: read their
        # tensors without running the code they carry (no PyTorch needed).
        return {
            key: value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
            for key, value in read_torchscript_tensors(path).items()
        }
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"Reading {path!r} needs PyTorch (`pip install torch`); or convert "
            "the state dict to .safetensors once and load that."
        ) from None
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        raise CheckpointError(
            f"Refused to read {path!r}: besides tensors it holds Python objects"
            f"{f' ({found.group(1)})' if found else ''}, and unpickling them could run "
            "code. Save only the state dict (torch.save(model.state_dict(), path)) or "
            "convert it to .safetensors, and load that."
        ) from None
    except MemoryError:
        raise
    except Exception as error:
        # weights_only unpickling runs no code of the file's: what fails is its data.
        raise CheckpointError(
            f"{path!r} is not a readable PyTorch checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})."
        ) from None
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise CheckpointError(
            f"{path!r} holds a {type(state_dict).__name__}, not a state dict; save "
            "model.state_dict()."
        )
    tensors = {
        key: value
        for key, value in state_dict.items()
        if isinstance(key, str) and isinstance(value, torch.Tensor)
    }
    _check_torch_tensors(tensors, path)
    return {
        key: value.float().numpy() if value.is_floating_point() else value.numpy()
        for key, value in tensors.items()
    }


def _check_torch_tensors(tensors, path):
    """Plain CPU tensors only, and no more of them than their storages hold.

    Checked before `.float()` copies them: one storage can back many views.
    """
    import torch

    storages = {}
    view_bytes = 0
    for key, value in tensors.items():
        plain = value.layout == torch.strided and not value.is_meta
        if not plain or value.is_quantized or value.is_complex():
            raise CheckpointError(
                f"{path!r}: {key} is a {value.layout} {value.dtype} tensor"
                f"{' on the meta device' if value.is_meta else ''}; CLIP weights are "
                "dense real tensors."
            )
        storage = value.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        view_bytes += value.numel() * value.element_size()
    check_view_bytes(view_bytes, sum(storages.values()), path)


def _is_legacy_torch_file(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x80\x02"  # pickle protocol 2 header


def _load_keras_hub_preset(preset, dtype):
    try:
        original = keras_hub.models.CLIPBackbone.from_preset(preset, dtype=dtype)
    except Exception as error:
        raise RuntimeError(
            f"Could not load the keras-hub preset {preset!r} ({error}). Preset "
            "names are downloaded by keras-hub and need network access; "
            "without it, download the preset elsewhere (or a Hugging Face "
            "CLIPModel folder, or OpenAI's .pt file) and pass its path."
        ) from error
    # Rebuild with the corrected text layer norm, then copy the weights over.
    backbone = build_backbone(architecture_of(original), dtype=dtype)
    backbone.set_weights(original.get_weights())
    return backbone
