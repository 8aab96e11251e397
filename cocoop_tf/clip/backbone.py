"""Frozen CLIP backbones (keras-hub's `CLIPBackbone`) built from an architecture."""

import dataclasses
import hashlib
import math

import keras
import keras_hub
import numpy as np

from cocoop_tf.clip.tokenizer import encode

# OpenAI CLIP's image normalisation, applied to pixels scaled to 0..1.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@keras.saving.register_keras_serializable(package="cocoop_tf")
class CLIPTextEncoder(keras_hub.models.CLIPTextEncoder):
    """keras-hub's CLIP text encoder with a configurable final layer norm.

    keras-hub fixes the epsilon of the text tower's final layer norm at 1e-6;
    the OpenAI and Hugging Face models use 1e-5, which every other CLIP layer
    norm already uses. This subclass makes it a parameter so converted
    checkpoints reproduce their source exactly, and keeps it through
    serialisation.

    Args:
        layer_norm_epsilon: float. Epsilon of the final layer norm.
        **kwargs: the arguments of `keras_hub.models.CLIPTextEncoder`.
    """

    def __init__(self, *args, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        # The functional graph calls the layer, which reads `epsilon` at call time.
        self.layer_norm.epsilon = layer_norm_epsilon
        self.layer_norm_epsilon = layer_norm_epsilon

    def get_config(self):
        config = super().get_config()
        config["layer_norm_epsilon"] = self.layer_norm_epsilon
        return config


@dataclasses.dataclass(frozen=True)
class CLIPArchitecture:
    """The shape of a ViT CLIP model, as read from a checkpoint.

    Args:
        image_size: input resolution (square images).
        patch_size: ViT patch size.
        vision_width: width of the vision transformer.
        vision_layers: number of vision transformer blocks.
        vision_heads: attention heads of the vision transformer.
        vision_mlp_width: hidden width of the vision MLPs.
        vocabulary_size: text vocabulary size (49 408 for CLIP's BPE).
        context_length: text positions (77 for released models).
        text_width: width of the text transformer.
        text_layers: number of text transformer blocks.
        text_heads: attention heads of the text transformer.
        text_mlp_width: hidden width of the text MLPs.
        projection_dim: size of the joint image-text embedding.
        activation: MLP activation, `"quick_gelu"` (OpenAI) or `"gelu"`.
    """

    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_mlp_width: int
    vocabulary_size: int
    context_length: int
    text_width: int
    text_layers: int
    text_heads: int
    text_mlp_width: int
    projection_dim: int
    activation: str = "quick_gelu"

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type is int and (
                not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(
                    f"The CLIP architecture's {field.name} is {value!r}; it must be a "
                    "positive whole number."
                )
        for width, heads, tower in (
            (self.vision_width, self.vision_heads, "vision"),
            (self.text_width, self.text_heads, "text"),
        ):
            if heads < 1 or width % heads:
                raise ValueError(
                    f"The {tower} width {width} is not divisible by {heads} "
                    f"attention heads; pass the right `{tower}_heads`."
                )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"Image size {self.image_size} is not a multiple of the patch "
                f"size {self.patch_size}."
            )
        if self.activation not in ("quick_gelu", "gelu"):
            raise ValueError(
                f"Unsupported MLP activation {self.activation!r}; CLIP uses "
                "'quick_gelu' (OpenAI) or 'gelu'."
            )


def build_backbone(architecture, dtype=None):
    """Builds a randomly initialised `keras_hub.models.CLIPBackbone`.

    Vision position ids are set to `0..N` here: keras-hub initialises them to
    zeros and only fixes them when loading its own preset weights.

    Args:
        architecture: a `CLIPArchitecture`.
        dtype: optional Keras dtype policy for the backbone.

    Returns:
        A `keras_hub.models.CLIPBackbone`.
    """
    a = architecture
    vision_encoder = keras_hub.models.CLIPVisionEncoder(
        patch_size=a.patch_size,
        hidden_dim=a.vision_width,
        num_layers=a.vision_layers,
        num_heads=a.vision_heads,
        intermediate_dim=a.vision_mlp_width,
        intermediate_activation=a.activation,
        image_shape=(a.image_size, a.image_size, 3),
        dtype=dtype,
        name="vision_encoder",
    )
    text_encoder = CLIPTextEncoder(
        vocabulary_size=a.vocabulary_size,
        embedding_dim=a.text_width,
        hidden_dim=a.text_width,
        num_layers=a.text_layers,
        num_heads=a.text_heads,
        intermediate_dim=a.text_mlp_width,
        intermediate_activation=a.activation,
        max_sequence_length=a.context_length,
        dtype=dtype,
        name="text_encoder",
    )
    backbone = keras_hub.models.CLIPBackbone(
        vision_encoder=vision_encoder,
        text_encoder=text_encoder,
        projection_dim=a.projection_dim,
        dtype=dtype,
        name="clip_backbone",
    )
    embedding = vision_encoder.embedding
    embedding.position_ids.assign(
        keras.ops.arange(embedding.num_positions)[None, :]
    )
    return backbone


def random_backbone(architecture, seed=0, dtype=None):
    """Builds a backbone with seeded random weights, for tests and benchmarks.

    Weights are drawn roughly as CLIP initialises its models before training:
    token embeddings N(0, 0.02), text positions N(0, 0.01), vision class and
    position embeddings N(0, width^-0.5), other kernels N(0, fan_in^-0.5);
    layer norms start as identity, biases at zero, and the logit scale at
    log(100) as in released models. The image features of such a model
    still tell images apart, so small prompt-learning tasks are learnable.

    Args:
        architecture: a `CLIPArchitecture`.
        seed: seed of the NumPy generator that draws the weights.
        dtype: optional Keras dtype policy.

    Returns:
        A `keras_hub.models.CLIPBackbone`.
    """
    backbone = build_backbone(architecture, dtype=dtype)
    rng = np.random.default_rng(seed)
    for variable in backbone.trainable_weights:
        path, shape = variable.path, tuple(variable.shape)
        name = path.rsplit("/", 1)[-1]
        if name == "gamma":
            value = np.ones(shape)
        elif name in ("beta", "bias"):
            value = np.zeros(shape)
        elif name == "logit_scale":
            value = np.array(math.log(100.0))
        else:
            if "token_embedding" in path:
                std = 0.02
            elif "position_embedding" in path and "text_encoder" in path:
                std = 0.01
            elif "position_embedding" in path or name == "class_embedding":
                std = shape[-1] ** -0.5
            elif path.rsplit("/", 2)[-2] in ("query", "key", "value"):
                std = shape[0] ** -0.5
            else:
                std = math.prod(shape[:-1]) ** -0.5
            value = rng.normal(0.0, std, shape)
        variable.assign(value.astype("float32"))
    return backbone


def architecture_of(backbone):
    """Reads the `CLIPArchitecture` of a keras-hub `CLIPBackbone`.

    Args:
        backbone: a `keras_hub.models.CLIPBackbone`.

    Returns:
        Its `CLIPArchitecture`.
    """
    vision, text = backbone.vision_encoder, backbone.text_encoder
    if vision.intermediate_activation != text.intermediate_activation:
        raise ValueError("Vision and text towers use different activations.")
    return CLIPArchitecture(
        image_size=vision.image_shape[0],
        patch_size=vision.patch_size,
        vision_width=vision.hidden_dim,
        vision_layers=vision.num_layers,
        vision_heads=vision.num_heads,
        vision_mlp_width=vision.intermediate_dim,
        vocabulary_size=text.vocabulary_size,
        context_length=text.max_sequence_length,
        text_width=text.hidden_dim,
        text_layers=text.num_layers,
        text_heads=text.num_heads,
        text_mlp_width=text.intermediate_dim,
        projection_dim=backbone.projection_dim,
        activation=vision.intermediate_activation,
    )


def freeze(backbone):
    """Marks every weight of the backbone non-trainable and returns it."""
    backbone.trainable = False
    return backbone


def fingerprint(backbone):
    """A short digest of the backbone's weights, to tell which CLIP a prompt was trained on.

    Two backbones of the same widths but other weights (another checkpoint,
    another seed) get different fingerprints; the same weights, from any
    checkpoint format, get the same one.

    Args:
        backbone: a `keras_hub.models.CLIPBackbone`.

    Returns:
        16 hexadecimal digits: the start of the BLAKE2b digest of every
        weight's float32 values, in the backbone's weight order.
    """
    digest = hashlib.blake2b(digest_size=8)
    for weight in backbone.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight), np.float32)
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def word_embeddings(backbone, text):
    """The text tower's token embeddings of `text`'s tokens, `[num_tokens, embedding_dim]`.

    No start or end token: these are what a prompt's context starts from
    (`PromptLearner.set_context`), e.g. the 4 tokens of "a photo of a".

    Args:
        backbone: a `keras_hub.models.CLIPBackbone`.
        text: words, tokenised as CLIP tokenises them.
    """
    return backbone.text_encoder.embedding.token_embedding(np.array(encode(text), "int32"))
