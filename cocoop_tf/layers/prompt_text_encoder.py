"""CLIP's frozen text transformer run on prompt embeddings."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cocoop_tf")
class PromptTextEncoder(keras.layers.Layer):
    """Encodes `[SOS][context][name tokens . EOS]` prompts with CLIP's text tower.

    The prompt of class `c` joins the start token, the given context vectors
    and the class name's tokens from `class_token_ids[c]` (as made by
    `cocoop_tf.tokenize_classnames`: `[SOS] name tokens [.] [EOS] 0...`),
    cut to the encoder's context length. Position embeddings are added, the
    causal transformer runs (with an explicit boolean mask), the final layer
    norm is applied and the feature at the end token is projected. With
    context vectors taken from the words "a photo of a" this is exactly
    CLIP's encoding of "a photo of a {name}."; with no context vectors
    (`M = 0`) it encodes the token ids as they are. Every weight belongs to
    the (frozen) CLIP backbone.

    Call arguments:
        context: `[G, M, D]`, one context per group (per image for CoCoOp, a
            single group for CoOp) combined with every class, or
            `[G, C, M, D]`, one context per group and class.
        class_token_ids: int `[C, L]` token ids of the class names.

    Returns:
        Text features `[G, C, projection_dim]` (not normalised).

    Args:
        text_encoder: the backbone's `text_encoder` (keras-hub CLIPTextEncoder).
        text_projection: the backbone's `text_projection` Dense layer.
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(self, text_encoder, text_projection, **kwargs):
        super().__init__(**kwargs)
        self.text_encoder = text_encoder
        self.text_projection = text_projection

    def call(self, context, class_token_ids):
        n_ctx = context.shape[-2]
        token_ids = ops.convert_to_tensor(class_token_ids, "int32")
        token_ids = token_ids[:, : self.text_encoder.max_sequence_length - n_ctx]
        num_classes = ops.shape(token_ids)[0]
        length = ops.shape(token_ids)[1] + n_ctx
        groups = ops.shape(context)[0]
        width = self.text_encoder.hidden_dim
        embedded = ops.cast(
            self.text_encoder.embedding.token_embedding(token_ids), self.compute_dtype
        )
        context = ops.cast(context, self.compute_dtype)
        if len(context.shape) == 3:
            context = ops.broadcast_to(context[:, None], (groups, num_classes, n_ctx, width))
        outer = (groups, num_classes)
        prompts = ops.concatenate(
            [
                ops.broadcast_to(embedded[None, :, :1], (*outer, 1, width)),
                context,
                ops.broadcast_to(embedded[None, :, 1:], (*outer, length - 1 - n_ctx, width)),
            ],
            axis=2,
        )
        x = ops.reshape(prompts, (-1, length, width)) + self._positions(length)
        causal = ops.tril(ops.ones((length, length), "bool"))[None]
        for block in self.text_encoder.encoder_layers:
            x = transformer_block(block, x, causal)
        x = self.text_encoder.layer_norm(x)
        # The end token has the largest id; the context shifts it by M places.
        eos = ops.tile(ops.argmax(token_ids, axis=-1) + n_ctx, (groups,))
        features = ops.take_along_axis(x, ops.reshape(eos, (-1, 1, 1)), axis=1)[:, 0]
        features = self.text_projection(features)
        return ops.reshape(features, (groups, num_classes, -1))

    def _positions(self, length):
        table = self.text_encoder.embedding.position_embedding.position_embeddings
        return ops.cast(table, self.compute_dtype)[:length]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "text_encoder": keras.layers.serialize(self.text_encoder),
                "text_projection": keras.layers.serialize(self.text_projection),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("text_encoder", "text_projection"):
            config[key] = keras.layers.deserialize(config[key])
        return cls(**config)


def transformer_block(block, x, attention_mask):
    """One pre-norm CLIP block (keras-hub `CLIPEncoderLayer`) with a given mask."""
    h = block.layer_norm_1(x)
    x = x + block.attention(h, h, h, attention_mask=attention_mask)
    h = block.dense_1(block.layer_norm_2(x))
    return x + block.dense_2(block.activation(h))
