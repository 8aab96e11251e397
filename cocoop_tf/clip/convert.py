"""Conversion of Hugging Face and OpenAI CLIP checkpoints to keras-hub.

Both layouts are brought to Hugging Face parameter names (PyTorch tensor
layout, as NumPy arrays); one function then writes those into a keras-hub
`CLIPBackbone`.
"""

import math
import re

import numpy as np

from cocoop_tf.clip.backbone import CLIPArchitecture
from cocoop_tf.clip.backbone import build_backbone

# OpenAI's loader derives the head count from the width; open_clip models with
# another head width need `vision_heads` / `text_heads` given explicitly.
OPENAI_HEAD_WIDTH = 64
# OpenAI's TorchScript archives carry these scalars beside the weights.
OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as a ViT CLIP model."""


def architecture_from_hf_config(config):
    """Reads a `CLIPArchitecture` from a Hugging Face CLIP `config.json` dict.

    Args:
        config: the parsed `config.json` of a `CLIPModel`.

    Returns:
        The `CLIPArchitecture`.
    """
    if config.get("model_type") != "clip":
        raise CheckpointError(
            f"config.json has model_type {config.get('model_type')!r}, not "
            "'clip'; only Hugging Face `CLIPModel` checkpoints are supported."
        )
    try:
        return _architecture_from_hf_config(config)
    except KeyError as error:
        raise CheckpointError(
            f"config.json lacks {error}; it is not a complete CLIPModel config."
        ) from None


def _architecture_from_hf_config(config):
    vision, text = config["vision_config"], config["text_config"]
    for tower, name in ((vision, "vision_config"), (text, "text_config")):
        if not isinstance(tower, dict):
            raise CheckpointError(f"config.json's {name} is not a JSON object.")
    activations = {vision.get("hidden_act"), text.get("hidden_act")}
    if len(activations) != 1 or not activations <= {"quick_gelu", "gelu"}:
        raise CheckpointError(
            f"Unsupported activations {sorted(map(str, activations))}; "
            "expected 'quick_gelu' or 'gelu' in both towers."
        )
    for tower in (vision, text):
        if tower.get("layer_norm_eps", 1e-5) != 1e-5:
            raise CheckpointError(
                f"layer_norm_eps {tower['layer_norm_eps']} is not supported; "
                "keras-hub's CLIP layers use 1e-5."
            )
    return CLIPArchitecture(
        image_size=_size(vision, "vision_config", "image_size"),
        patch_size=_size(vision, "vision_config", "patch_size"),
        vision_width=_size(vision, "vision_config", "hidden_size"),
        vision_layers=_size(vision, "vision_config", "num_hidden_layers"),
        vision_heads=_size(vision, "vision_config", "num_attention_heads"),
        vision_mlp_width=_size(vision, "vision_config", "intermediate_size"),
        vocabulary_size=_size(text, "text_config", "vocab_size"),
        context_length=_size(text, "text_config", "max_position_embeddings"),
        text_width=_size(text, "text_config", "hidden_size"),
        text_layers=_size(text, "text_config", "num_hidden_layers"),
        text_heads=_size(text, "text_config", "num_attention_heads"),
        text_mlp_width=_size(text, "text_config", "intermediate_size"),
        projection_dim=_size(config, None, "projection_dim"),
        activation=activations.pop(),
    )


def _size(section, name, key):
    """`section[key]`, a size from config.json's `name` section: a positive whole number."""
    value = section[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        where = f"{name}.{key}" if name else key
        raise CheckpointError(
            f"config.json's {where} is {value!r:.40}; it must be a positive whole number."
        )
    return value


def check_not_resnet(state_dict):
    """Raises a clear error for ResNet (RN50, ...) CLIP checkpoints."""
    if any(key.startswith("visual.layer1.") for key in state_dict):
        raise CheckpointError(
            "This is a ResNet CLIP checkpoint (RN50/RN101/RN50x4...): only "
            "ViT CLIP backbones (ViT-B/32, ViT-B/16, ViT-L/14, ...) are "
            "supported; use a ViT checkpoint."
        )


def _count_blocks(state_dict, prefix):
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def architecture_from_openai(
    state_dict, vision_heads=None, text_heads=None, activation="quick_gelu"
):
    """Reads a `CLIPArchitecture` from the tensor shapes of an OpenAI state dict.

    Args:
        state_dict: OpenAI / open_clip parameter names to arrays.
        vision_heads: vision attention heads; default width // 64 as OpenAI.
        text_heads: text attention heads; default width // 64 as OpenAI.
        activation: MLP activation; OpenAI's models use `"quick_gelu"`, most
            open_clip models trained by others `"gelu"`. State dicts do not
            record it.

    Returns:
        The `CLIPArchitecture`.
    """
    check_not_resnet(state_dict)
    required = ("visual.proj", "visual.conv1.weight", "token_embedding.weight")
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise CheckpointError(
            f"Not an OpenAI-layout ViT CLIP state dict: {missing} missing."
        )
    vision_width, _, patch_size, _ = _dims(state_dict, "visual.conv1.weight", 4)
    positions, _ = _dims(state_dict, "visual.positional_embedding", 2)
    grid = math.isqrt(positions - 1)
    if positions < 2 or grid * grid != positions - 1:
        raise CheckpointError(
            f"visual.positional_embedding has {positions} rows; a ViT has one per "
            "patch of a square grid plus one."
        )
    context_length, text_width = _dims(state_dict, "positional_embedding", 2)
    return CLIPArchitecture(
        image_size=grid * patch_size,
        patch_size=patch_size,
        vision_width=vision_width,
        vision_layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
        vision_heads=vision_heads or vision_width // OPENAI_HEAD_WIDTH,
        vision_mlp_width=_dims(state_dict, "visual.transformer.resblocks.0.mlp.c_fc.weight", 2)[0],
        vocabulary_size=_dims(state_dict, "token_embedding.weight", 2)[0],
        context_length=context_length,
        text_width=text_width,
        text_layers=_count_blocks(state_dict, "transformer.resblocks."),
        text_heads=text_heads or text_width // OPENAI_HEAD_WIDTH,
        text_mlp_width=_dims(state_dict, "transformer.resblocks.0.mlp.c_fc.weight", 2)[0],
        projection_dim=_dims(state_dict, "text_projection", 2)[1],
        activation=activation,
    )


def _dims(state_dict, key, rank):
    """The shape of `state_dict[key]`, which must exist, have `rank` axes and not be empty."""
    if key not in state_dict:
        raise CheckpointError(f"Not an OpenAI-layout ViT CLIP state dict: {key!r} missing.")
    shape = tuple(np.shape(state_dict[key]))
    if len(shape) != rank or not all(shape):
        raise CheckpointError(
            f"{key} has shape {shape}; an OpenAI-layout ViT CLIP has a non-empty "
            f"{rank}-axis tensor there."
        )
    return shape


def openai_to_hf_names(state_dict):
    """Renames an OpenAI-layout state dict to Hugging Face names and layouts.

    Args:
        state_dict: OpenAI / open_clip parameter names to arrays.

    Returns:
        A dict of Hugging Face `CLIPModel` parameter names to arrays.
    """
    renamed = {}
    towers = (("visual.transformer.", "vision_model."), ("transformer.", "text_model."))
    for key, value in state_dict.items():
        if key in OPENAI_METADATA_KEYS or key.startswith("attn_mask"):
            continue
        for openai_prefix, hf_prefix in towers:
            match = re.match(re.escape(openai_prefix) + r"resblocks\.(\d+)\.(.*)", key)
            if match:
                block = f"{hf_prefix}encoder.layers.{match.group(1)}."
                name = match.group(2)
                if name in ("attn.in_proj_weight", "attn.in_proj_bias"):
                    if np.ndim(value) == 0 or np.shape(value)[0] % 3:
                        raise CheckpointError(
                            f"{key} has shape {np.shape(value)}: packed query, key and "
                            "value projections need a first axis divisible by 3."
                        )
                    kind = name.rsplit("_", 1)[1]  # "weight" or "bias"
                    for part, chunk in zip("qkv", np.split(value, 3, axis=0)):
                        renamed[f"{block}self_attn.{part}_proj.{kind}"] = chunk
                else:
                    # An unknown name stays as it is: the check reports it as unexpected.
                    renamed[block + _OPENAI_BLOCK_NAMES.get(name, name)] = value
                break
        else:
            if key in _OPENAI_NAMES:
                hf_name, transform = _OPENAI_NAMES[key]
                renamed[hf_name] = transform(value)
            else:
                renamed[key] = value  # reported as unexpected by the loader
    return renamed


_OPENAI_BLOCK_NAMES = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}


def _same(x):
    return x


_OPENAI_NAMES = {
    "visual.conv1.weight": ("vision_model.embeddings.patch_embedding.weight", _same),
    "visual.class_embedding": ("vision_model.embeddings.class_embedding", _same),
    "visual.positional_embedding": (
        "vision_model.embeddings.position_embedding.weight",
        _same,
    ),
    "visual.ln_pre.weight": ("vision_model.pre_layrnorm.weight", _same),
    "visual.ln_pre.bias": ("vision_model.pre_layrnorm.bias", _same),
    "visual.ln_post.weight": ("vision_model.post_layernorm.weight", _same),
    "visual.ln_post.bias": ("vision_model.post_layernorm.bias", _same),
    # OpenAI multiplies by these on the right; Hugging Face stores Linear weights.
    "visual.proj": ("visual_projection.weight", np.transpose),
    "text_projection": ("text_projection.weight", np.transpose),
    "token_embedding.weight": ("text_model.embeddings.token_embedding.weight", _same),
    "positional_embedding": ("text_model.embeddings.position_embedding.weight", _same),
    "ln_final.weight": ("text_model.final_layer_norm.weight", _same),
    "ln_final.bias": ("text_model.final_layer_norm.bias", _same),
    "logit_scale": ("logit_scale", _same),
}


def _block_assignments(keras_block, prefix, heads):
    """Pairs the variables of one keras-hub encoder block with HF tensors."""
    attention = keras_block.attention
    width = keras_block.hidden_dim
    split_heads = lambda w: w.T.reshape(width, heads, width // heads)
    pairs = [
        (keras_block.layer_norm_1.gamma, "layer_norm1.weight", _same),
        (keras_block.layer_norm_1.beta, "layer_norm1.bias", _same),
        (keras_block.layer_norm_2.gamma, "layer_norm2.weight", _same),
        (keras_block.layer_norm_2.beta, "layer_norm2.bias", _same),
        (keras_block.dense_1.kernel, "mlp.fc1.weight", np.transpose),
        (keras_block.dense_1.bias, "mlp.fc1.bias", _same),
        (keras_block.dense_2.kernel, "mlp.fc2.weight", np.transpose),
        (keras_block.dense_2.bias, "mlp.fc2.bias", _same),
        (
            attention.output_dense.kernel,
            "self_attn.out_proj.weight",
            lambda w: w.T.reshape(heads, width // heads, width),
        ),
        (attention.output_dense.bias, "self_attn.out_proj.bias", _same),
    ]
    for part, dense in zip("qkv", (attention.query_dense, attention.key_dense, attention.value_dense)):
        pairs.append((dense.kernel, f"self_attn.{part}_proj.weight", split_heads))
        pairs.append(
            (dense.bias, f"self_attn.{part}_proj.bias", lambda b: b.reshape(heads, -1))
        )
    return [(variable, prefix + name, fn) for variable, name, fn in pairs]


def _assignments(backbone):
    """Every backbone variable with its HF tensor name and layout transform."""
    vision, text = backbone.vision_encoder, backbone.text_encoder
    v_embed, t_embed = vision.embedding, text.embedding
    pairs = [
        (
            v_embed.patch_embedding.kernel,
            "vision_model.embeddings.patch_embedding.weight",
            lambda w: np.transpose(w, (2, 3, 1, 0)),
        ),
        (v_embed.class_embedding, "vision_model.embeddings.class_embedding", _same),
        (
            v_embed.position_embedding.embeddings,
            "vision_model.embeddings.position_embedding.weight",
            _same,
        ),
        (vision.pre_layer_norm.gamma, "vision_model.pre_layrnorm.weight", _same),
        (vision.pre_layer_norm.beta, "vision_model.pre_layrnorm.bias", _same),
        (vision.layer_norm.gamma, "vision_model.post_layernorm.weight", _same),
        (vision.layer_norm.beta, "vision_model.post_layernorm.bias", _same),
        (
            t_embed.token_embedding.embeddings,
            "text_model.embeddings.token_embedding.weight",
            _same,
        ),
        (
            t_embed.position_embedding.position_embeddings,
            "text_model.embeddings.position_embedding.weight",
            _same,
        ),
        (text.layer_norm.gamma, "text_model.final_layer_norm.weight", _same),
        (text.layer_norm.beta, "text_model.final_layer_norm.bias", _same),
        (backbone.vision_projection.kernel, "visual_projection.weight", np.transpose),
        (backbone.text_projection.kernel, "text_projection.weight", np.transpose),
        (backbone.clip_head.logit_scale, "logit_scale", _same),
    ]
    for tower, prefix in ((vision, "vision_model"), (text, "text_model")):
        for i, block in enumerate(tower.encoder_layers):
            pairs += _block_assignments(
                block, f"{prefix}.encoder.layers.{i}.", tower.num_heads
            )
    return pairs


# Buffers that some transformers versions save; they carry no weights.
_HF_IGNORED = re.compile(r".*embeddings\.position_ids$")


# Far beyond released CLIP models (ViT-bigG has 48 blocks): more is a damaged file.
MAX_BLOCKS = 256


def hf_tensor_shapes(architecture):
    """The Hugging Face `CLIPModel` tensors of an architecture and their shapes.

    Args:
        architecture: a `CLIPArchitecture`.

    Returns:
        dict from HF parameter name to shape (PyTorch layout).
    """
    a = architecture
    vision, text = "vision_model.", "text_model."
    positions = (a.image_size // a.patch_size) ** 2 + 1
    shapes = {
        f"{vision}embeddings.patch_embedding.weight": (
            a.vision_width, 3, a.patch_size, a.patch_size
        ),
        f"{vision}embeddings.class_embedding": (a.vision_width,),
        f"{vision}embeddings.position_embedding.weight": (positions, a.vision_width),
        f"{text}embeddings.token_embedding.weight": (a.vocabulary_size, a.text_width),
        f"{text}embeddings.position_embedding.weight": (a.context_length, a.text_width),
        "visual_projection.weight": (a.projection_dim, a.vision_width),
        "text_projection.weight": (a.projection_dim, a.text_width),
        "logit_scale": (),
    }
    for name in (f"{vision}pre_layrnorm", f"{vision}post_layernorm", f"{text}final_layer_norm"):
        width = a.text_width if name.startswith(text) else a.vision_width
        shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (width,)
    towers = (
        (vision, a.vision_layers, a.vision_width, a.vision_mlp_width),
        (text, a.text_layers, a.text_width, a.text_mlp_width),
    )
    for prefix, layers, width, mlp_width in towers:
        for i in range(layers):
            block = f"{prefix}encoder.layers.{i}."
            for norm in ("layer_norm1", "layer_norm2"):
                shapes[f"{block}{norm}.weight"] = shapes[f"{block}{norm}.bias"] = (width,)
            for part in "qkv":
                shapes[f"{block}self_attn.{part}_proj.weight"] = (width, width)
                shapes[f"{block}self_attn.{part}_proj.bias"] = (width,)
            shapes[f"{block}self_attn.out_proj.weight"] = (width, width)
            shapes[f"{block}self_attn.out_proj.bias"] = (width,)
            shapes[f"{block}mlp.fc1.weight"] = (mlp_width, width)
            shapes[f"{block}mlp.fc1.bias"] = (mlp_width,)
            shapes[f"{block}mlp.fc2.weight"] = (width, mlp_width)
            shapes[f"{block}mlp.fc2.bias"] = (width,)
    return shapes


def check_tensors(architecture, tensors):
    """Checks a checkpoint's tensors against the architecture read from it.

    Run before building the backbone: the architecture comes from a few
    tensors (or config.json numbers), and building it allocates what they
    declare. Once every tensor it needs is present with its shape, the
    backbone is no larger than the weights the file really holds.

    Args:
        architecture: the `CLIPArchitecture` read from the checkpoint.
        tensors: dict of HF parameter names to arrays (PyTorch layout).

    Raises:
        CheckpointError: too many blocks, or a tensor missing, unexpected,
            of the wrong shape or not floating point.
    """
    a = architecture
    for tower, layers in (("vision", a.vision_layers), ("text", a.text_layers)):
        if layers > MAX_BLOCKS:
            raise CheckpointError(
                f"The checkpoint declares {layers} {tower} transformer blocks; CLIP "
                f"models have at most {MAX_BLOCKS} (a damaged file?)."
            )
    shapes = hf_tensor_shapes(architecture)
    _check_names(shapes.keys(), tensors)
    for name, shape in shapes.items():
        value = tensors[name]
        if tuple(np.shape(value)) != shape:
            raise CheckpointError(
                f"{name}: shape {tuple(np.shape(value))} does not fit {shape}, the shape "
                "the checkpoint's other tensors imply."
            )
        dtype = np.asarray(value).dtype
        # bfloat16 is ml_dtypes' (registered with NumPy by TensorFlow), not a NumPy float.
        if not np.issubdtype(dtype, np.floating) and dtype.name != "bfloat16":
            raise CheckpointError(f"{name} holds {dtype} values; CLIP weights are floating point.")


def _check_names(expected, tensors):
    missing = sorted(expected - tensors.keys())
    unexpected = sorted(
        k for k in tensors.keys() - expected if not _HF_IGNORED.match(k)
    )
    if missing or unexpected:
        raise CheckpointError(
            "The checkpoint does not match a ViT CLIP model: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}."
        )


def load_hf_weights(backbone, tensors):
    """Writes Hugging Face `CLIPModel` tensors into a keras-hub backbone.

    Args:
        backbone: a `keras_hub.models.CLIPBackbone` of the same architecture.
        tensors: dict of HF parameter names to arrays (PyTorch layout).

    Raises:
        CheckpointError: a tensor is missing, unexpected or of the wrong shape.
    """
    pairs = _assignments(backbone)
    _check_names({name for _, name, _ in pairs}, tensors)
    for variable, name, transform in pairs:
        value = np.asarray(transform(np.asarray(tensors[name], dtype=np.float32)))
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{name}: shape {value.shape} does not fit {tuple(variable.shape)}."
            )
        variable.assign(value)


def backbone_from_openai(
    state_dict, vision_heads=None, text_heads=None, activation="quick_gelu", dtype=None
):
    """Builds a keras-hub `CLIPBackbone` from an OpenAI-layout state dict.

    Args:
        state_dict: OpenAI / open_clip parameter names to arrays.
        vision_heads: see `architecture_from_openai`.
        text_heads: see `architecture_from_openai`.
        activation: see `architecture_from_openai`.
        dtype: optional Keras dtype policy.
    """
    architecture = architecture_from_openai(
        state_dict, vision_heads, text_heads, activation
    )
    tensors = openai_to_hf_names(state_dict)
    check_tensors(architecture, tensors)
    backbone = build_backbone(architecture, dtype=dtype)
    load_hf_weights(backbone, tensors)
    return backbone
