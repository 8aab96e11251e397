"""CLIP transformer blocks computed with plain matmuls, for the frozen towers' fast paths.

keras-hub's `CLIPEncoderLayer` holds the weights; these functions use them
in layouts that skip work the result does not need (see `PromptTextEncoder`
and `CLIPImageEncoder`), with the same numbers as the layer's own `call`.
"""

import math

import keras
from keras import ops


def transformer_block(block, x, attention_mask):
    """One pre-norm CLIP block (keras-hub `CLIPEncoderLayer`) with a given mask."""
    h = block.layer_norm_1(x)
    x = x + block.attention(h, h, h, attention_mask=attention_mask)
    return x + mlp(block, x)


def mlp(block, x):
    """The block's second half before its residual: layer norm, MLP."""
    return block.dense_2(block.activation(block.dense_1(block.layer_norm_2(x))))


def masked_softmax(scores, mask=None):
    """Softmax over positions where `mask` is True (all if None); at least float32, as Keras does."""
    if keras.backend.standardize_dtype(scores.dtype) in ("float16", "bfloat16"):
        scores = ops.cast(scores, "float32")
    if mask is not None:
        scores = ops.where(mask, scores, -1e9)
    return ops.softmax(scores, axis=-1)


def linear(x, kernel, bias):
    """`x @ kernel + bias` over the last axis, as one 2-D matmul."""
    kernel = ops.cast(kernel, x.dtype)
    outputs = ops.matmul(ops.reshape(x, (-1, kernel.shape[0])), kernel) + ops.cast(bias, x.dtype)
    return ops.reshape(outputs, (*ops.shape(x)[:-1], kernel.shape[1]))


def attention_weights(attention, width):
    """The attention's query, key, value and output projections as 2-D matrices.

    Keras' MultiHeadAttention keeps them as `EinsumDense` kernels shaped
    `[D, heads, head_dim]` (output `[heads, head_dim, D]`); on CPU a plain
    matmul with the same numbers is several times faster, and one matmul for
    query, key and value together is faster still.
    """
    projections = (attention.query_dense, attention.key_dense, attention.value_dense)
    qkv_kernel = ops.concatenate([ops.reshape(p.kernel, (width, width)) for p in projections], axis=1)
    qkv_bias = ops.concatenate([ops.reshape(p.bias, (width,)) for p in projections], axis=0)
    output = attention.output_dense
    return qkv_kernel, qkv_bias, ops.reshape(output.kernel, (width, width)), output.bias


def self_attention_block(block, x, first_row_only=False):
    """One pre-norm CLIP block without a mask, as the vision tower runs it.

    Args:
        block: a keras-hub `CLIPEncoderLayer`.
        x: `[B, N, D]` hidden states.
        first_row_only: compute only the first position's next hidden state
            (`[B, D]`), all that the class-token pooling of the last block reads.

    Returns:
        `[B, N, D]`, or `[B, D]` with `first_row_only`.
    """
    width = block.hidden_dim
    qkv_kernel, qkv_bias, out_kernel, out_bias = attention_weights(block.attention, width)
    normed = block.layer_norm_1(x)
    if first_row_only:
        keys, values = ops.split(linear(normed, qkv_kernel[:, width:], qkv_bias[width:]), 2, axis=-1)
        query = linear(normed[:, :1], qkv_kernel[:, :width], qkv_bias[:width])
        x = x[:, :1]
    else:
        query, keys, values = ops.split(linear(normed, qkv_kernel, qkv_bias), 3, axis=-1)
    attended = scaled_attention(query, keys, values, block.num_heads)
    x = x + linear(attended, out_kernel, out_bias)
    x = x + mlp(block, x)
    return x[:, 0] if first_row_only else x


def scaled_attention(query, keys, values, heads, mask=None):
    """Multi-head scaled dot-product attention, without projections.

    Args:
        query: `[B, Q, D]`.
        keys, values: `[B, K, D]`.
        heads: number of heads (D is split evenly among them).
        mask: boolean mask over the keys, broadcastable to `[B, heads, Q, K]`;
            None: every key is visible.

    Returns:
        `[B, Q, D]`, the heads joined again.
    """
    width = query.shape[-1]
    head_dim = width // heads

    def split_heads(t):
        return ops.reshape(t, (*ops.shape(t)[:-1], heads, head_dim))

    scores = ops.einsum("bqhd,bkhd->bhqk", split_heads(query * (1.0 / math.sqrt(head_dim))), split_heads(keys))
    weights = ops.cast(masked_softmax(scores, mask), values.dtype)
    attended = ops.einsum("bhqk,bkhd->bqhd", weights, split_heads(values))
    return ops.reshape(attended, (*ops.shape(attended)[:2], width))
