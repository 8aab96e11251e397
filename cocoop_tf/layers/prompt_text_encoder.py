"""CLIP's frozen text transformer run on prompt embeddings, exactly and fast."""


import keras
import numpy as np
from keras import ops

from cocoop_tf.layers.transformer_ops import attention_weights
from cocoop_tf.layers.transformer_ops import linear
from cocoop_tf.layers.transformer_ops import mlp
from cocoop_tf.layers.transformer_ops import scaled_attention
from cocoop_tf.layers.transformer_ops import transformer_block

# Token rows (sequences x positions) per chunk of classes in the efficient
# path: about 128 MB of float32 activations per tensor at width 512.
DEFAULT_TOKEN_BUDGET = 65536
# Groups (images) assumed per call when the batch size is not known statically.
ASSUMED_GROUPS = 32
MODES = ("efficient", "padded", "reference")


@keras.saving.register_keras_serializable(package="cocoop_tf")
class PromptTextEncoder(keras.layers.Layer):
    """Encodes `[SOS][context][name tokens . EOS]` prompts with CLIP's text tower.

    The prompt of class `c` joins the start token, the given context vectors
    and the class name's tokens from `class_token_ids[c]` (as made by
    `cocoop_tf.tokenize_classnames`: `[SOS] name tokens [.] [EOS] 0...`),
    cut to the encoder's context length. Position embeddings are added, the
    causal transformer runs (with explicit boolean masks), the final layer
    norm is applied and the feature at the end token is projected. With
    context vectors taken from the words "a photo of a" this is exactly
    CLIP's encoding of "a photo of a {name}."; with no context vectors
    (`M = 0`) it encodes the token ids as they are. Every weight belongs to
    the (frozen) CLIP backbone.

    Three modes give the same result:
    - `"efficient"` (default) uses the causal structure: nothing after a
      class's end token is computed, and the start token and context vectors,
      identical for all classes of a group, run once per group. A fixed class
      set (a NumPy array) is packed: the name tokens of all classes go through
      the projections and MLPs as one sequence without padding, attention
      sees them per class, the first block's name projections (the same for
      every group) run once, and the last block computes only the end tokens.
      A class set given at run time (a served model's input) takes the
      `"padded"` path.
    - `"padded"`: as `"efficient"`, but classes in a chunk are padded to the
      chunk's longest name and every position of every block is computed.
    - `"reference"` runs every (group, class) prompt at the full context
      length, as the reference implementation does.

    Classes are processed in chunks of similar length (`class_chunk_size`)
    to bound memory.

    Call arguments:
        context: `[G, M, D]`, one context per group (per image for CoCoOp, a
            single group for CoOp) combined with every class, or
            `[G, C, M, D]`, one context per group and class.
        class_token_ids: int `[C, L]` token ids of the class names. A NumPy
            array (a fixed class set) lets the efficient path sort classes
            by length and use static shapes; a tensor works too.
        deep_context: optional `[J - 1, M, D]`, MaPLe's deep prompts: before
            block `j` (1 <= j < J) the hidden states at the context positions
            are replaced by `deep_context[j - 1]` (no position embedding is
            added), for every group and class.

    Returns:
        Text features `[G, C, projection_dim]` (not normalised).

    Args:
        text_encoder: the backbone's `text_encoder` (keras-hub CLIPTextEncoder).
        text_projection: the backbone's `text_projection` Dense layer.
        mode: `"efficient"`, `"padded"` or `"reference"`.
        class_chunk_size: classes per chunk in the efficient and padded
            paths; None picks it so a chunk holds about 65 536 token rows for
            the batch.
        **kwargs: standard `keras.layers.Layer` arguments; give the
            backbone's `dtype` (its `dtype_policy`), as its layers compute
            in theirs.

    Example:

    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    encoder = cocoop_tf.layers.PromptTextEncoder(
        clip.text_encoder, clip.text_projection
    )
    token_ids = cocoop_tf.tokenize_classnames(["cat", "dog", "red car"], n_ctx=4)
    # Two groups (images) of 4 context vectors as wide as the token embeddings.
    width = clip.text_encoder.embedding_dim  # 64
    context = np.random.normal(0, 0.02, size=(2, 4, width)).astype("float32")
    encoder(context, token_ids).shape  # (2, 3, 32): projection_dim 32

    # In a functional model, with this class set fixed...
    context = keras.Input((4, width))
    model = keras.Model(context, encoder(context, token_ids))  # [None, 3, 32]
    # ...or with the class set as an input.
    ids = keras.Input((77,), dtype="int32")
    model = keras.Model([context, ids], encoder(context, ids))  # [None, None, 32]
    ```
    """

    def __init__(self, text_encoder, text_projection, mode="efficient", class_chunk_size=None, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be 'efficient', 'padded' or 'reference', got {mode!r}.")
        self.text_encoder = text_encoder
        self.text_projection = text_projection
        self.mode = mode
        self.class_chunk_size = class_chunk_size

    def call(self, context, class_token_ids, deep_context=None):
        n_ctx = context.shape[-2]
        limit = self.text_encoder.max_sequence_length - n_ctx
        if deep_context is not None:
            deep_context = ops.cast(deep_context, self.compute_dtype)
            if len(deep_context.shape) != 3 or deep_context.shape[1] != n_ctx:
                raise ValueError(
                    f"Expected deep prompts of shape [depth - 1, {n_ctx}, width] (as many vectors "
                    f"as the context), got shape {tuple(deep_context.shape)}."
                )
            if deep_context.shape[0] >= len(self.text_encoder.encoder_layers):
                raise ValueError(
                    f"{deep_context.shape[0]} deep prompts for a text tower of "
                    f"{len(self.text_encoder.encoder_layers)} blocks: at most one per block after the first."
                )
        if self.mode == "reference":
            token_ids = ops.convert_to_tensor(class_token_ids, "int32")[:, :limit]
            return self._encode_full(context, token_ids, deep_context)
        # Keras hands `call` tensors, also for a NumPy class set: recover its
        # value (a constant) so that classes can be sorted and chunked.
        class_token_ids = _fixed_value(class_token_ids)
        if not isinstance(class_token_ids, np.ndarray):
            # A class set known only at run time (a served model's input): cut
            # after its last end token, then encoded in chunks of classes.
            token_ids = ops.convert_to_tensor(class_token_ids, "int32")[:, :limit]
            token_ids = token_ids[:, : ops.max(ops.argmax(token_ids, axis=-1)) + 1]
            if len(context.shape) == 4:  # a context per class: as many classes as it has
                return self._encode(context, token_ids, deep=deep_context)
            return self._encode_in_chunks(context, token_ids, deep_context)
        token_ids = class_token_ids[:, :limit].astype("int32")
        lengths = np.argmax(token_ids, axis=-1) + 1
        order = np.argsort(lengths, kind="stable")
        chunk = self._chunk_size(context, int(lengths.max()) + n_ctx)
        features = []
        for start in range(0, len(order), chunk):
            classes = order[start : start + chunk]
            ids = token_ids[classes, : lengths[classes].max()]
            features.append(self._encode(context, ids, classes, deep_context))
        features = ops.concatenate(features, axis=1)
        if np.any(order != np.arange(len(order))):
            features = ops.take(features, np.argsort(order), axis=1)
        return features

    def compute_output_shape(self, context_shape, class_token_ids_shape=None, deep_context_shape=None):
        if len(context_shape) not in (3, 4):
            raise ValueError(
                "Expected a context of shape [groups, n_ctx, width] or [groups, "
                f"classes, n_ctx, width], got shape {tuple(context_shape)}."
            )
        num_classes = None
        if class_token_ids_shape is not None:
            num_classes = class_token_ids_shape[0]
        if num_classes is None and len(context_shape) == 4:
            num_classes = context_shape[1]  # a context per class: as many classes as it has
        return (context_shape[0], num_classes, self.text_projection.units)

    def _encode_in_chunks(self, context, token_ids, deep=None):
        """A run-time class set in a loop over chunks of classes, so memory is bounded for any C.

        The chunk size follows the token budget at run time (batch and name
        length are known then); the last chunk is filled with copies of the
        last class, whose features are dropped. Only builtin loop and
        elementwise ops, so that TFLite runs it too.
        """
        groups = ops.shape(context)[0]
        num_classes = ops.shape(token_ids)[0]
        length = ops.shape(token_ids)[1] + context.shape[1]
        budget = self.class_chunk_size or ops.maximum(1, DEFAULT_TOKEN_BUDGET // (groups * length))
        chunk = ops.maximum(ops.minimum(budget, num_classes), 1)
        count = (num_classes + chunk - 1) // chunk
        rows = ops.minimum(ops.arange(count * chunk), num_classes - 1)
        chunks = ops.reshape(ops.take(token_ids, rows, axis=0), (count, chunk, -1))
        width = self.text_projection.kernel.shape[-1]

        def add_chunk(i, features):
            encoded = self._encode_shared_prefix(context, chunks[i], deep)  # [G, chunk, width]
            here = ops.cast(ops.equal(ops.arange(count), i), encoded.dtype)
            # The reshape keeps the loop variable's static shape from one iteration to the next.
            return ops.reshape(features + here[:, None, None, None] * encoded[None], ops.shape(features))

        features = ops.fori_loop(
            0, count, add_chunk, ops.zeros((count, groups, chunk, width), self.compute_dtype)
        )
        features = ops.reshape(ops.transpose(features, (1, 0, 2, 3)), (groups, count * chunk, width))
        return features[:, :num_classes]

    def _encode(self, context, token_ids, classes=None, deep=None):
        if len(context.shape) == 4:  # one context per class: no shared prefix
            if classes is not None:
                context = ops.take(context, classes, axis=1)
            return self._encode_full(context, token_ids, deep)
        if isinstance(token_ids, np.ndarray) and self.mode == "efficient":
            return self._encode_packed(context, token_ids, deep)
        return self._encode_shared_prefix(context, token_ids, deep)

    def _chunk_size(self, context, length):
        if self.class_chunk_size:
            return int(self.class_chunk_size)
        groups = context.shape[0] or ASSUMED_GROUPS
        return max(1, DEFAULT_TOKEN_BUDGET // (groups * length))

    def _embed(self, token_ids):
        return ops.cast(self.text_encoder.embedding.token_embedding(token_ids), self.compute_dtype)

    def _positions(self, start, length):
        table = self.text_encoder.embedding.position_embedding.position_embeddings
        return ops.cast(table, self.compute_dtype)[start : start + length]

    def _project(self, hidden, eos):
        """Final layer norm and projection of `hidden[i, eos[i]]`."""
        hidden = ops.take_along_axis(hidden, ops.reshape(eos, (-1, 1, 1)), axis=1)[:, 0]
        return self.text_projection(self.text_encoder.layer_norm(hidden))

    def _encode_full(self, context, token_ids, deep=None):
        """Every (group, class) prompt as one full sequence."""
        n_ctx = context.shape[-2]
        num_classes, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1] + n_ctx
        groups = ops.shape(context)[0]
        width = self.text_encoder.hidden_dim
        embedded = self._embed(token_ids)
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
        x = ops.reshape(prompts, (-1, length, width)) + self._positions(0, length)
        causal = ops.tril(ops.ones((length, length), "bool"))[None]
        for i, block in enumerate(self.text_encoder.encoder_layers):
            prompt = deep_prompt(deep, i, ops.shape(x)[0])
            if prompt is not None:
                x = ops.concatenate([x[:, :1], prompt, x[:, 1 + n_ctx :]], axis=1)
            x = transformer_block(block, x, causal)
        # The end token has the largest id; the context shifts it by M places.
        eos = ops.tile(ops.argmax(token_ids, axis=-1) + n_ctx, (groups,))
        return ops.reshape(self._project(x, eos), (groups, num_classes, -1))

    def _encode_shared_prefix(self, context, token_ids, deep=None):
        """Start token and context once per group; class tokens attend to them."""
        groups = ops.shape(context)[0]
        num_classes = ops.shape(token_ids)[0]
        width = self.text_encoder.hidden_dim
        n_prefix = context.shape[1] + 1
        embedded = self._embed(token_ids)
        start = ops.broadcast_to(embedded[:1, :1], (groups, 1, width))
        prefix = ops.concatenate([start, ops.cast(context, self.compute_dtype)], axis=1)
        prefix = prefix + self._positions(0, n_prefix)
        names = embedded[:, 1:]
        n_names = ops.shape(names)[1]
        names = names + self._positions(n_prefix, n_names)
        names = ops.reshape(
            ops.broadcast_to(names[None], (groups, num_classes, n_names, width)), (-1, n_names, width)
        )
        blocks = self.text_encoder.encoder_layers
        for i, block in enumerate(blocks):
            prefix = _with_deep_prompt(deep, i, prefix, groups)
            prefix, names = shared_prefix_block(
                block, prefix, names, groups, num_classes, update_prefix=i < len(blocks) - 1
            )
        # Position of the end token among the name tokens (which start after SOS).
        eos = ops.tile(ops.argmax(token_ids, axis=-1) - 1, (groups,))
        return ops.reshape(self._project(names, eos), (groups, num_classes, -1))

    def _encode_packed(self, context, token_ids, deep=None):
        """A fixed class set: start token and context once per group, name tokens packed.

        The name tokens of all classes run through the projections and MLPs
        as one unpadded sequence; attention sees them per class, in buckets
        of one length (`PackedNames`). The first block's query, key and
        value projections of the name tokens, the same for every group, run
        once; the last block runs its query, attention output and MLP at the
        end tokens only.
        """
        layout = PackedNames(token_ids)
        groups = ops.shape(context)[0]
        width = self.text_encoder.hidden_dim
        n_prefix = context.shape[1] + 1
        start = ops.broadcast_to(self._embed(token_ids[:1, :1]), (groups, 1, width))
        prefix = ops.concatenate([start, ops.cast(context, self.compute_dtype)], axis=1)
        prefix = prefix + self._positions(0, n_prefix)
        table = self.text_encoder.embedding.position_embedding.position_embeddings
        names = self._embed(layout.token_ids) + ops.take(
            ops.cast(table, self.compute_dtype), layout.positions + n_prefix, axis=0
        )
        blocks = self.text_encoder.encoder_layers
        for i, block in enumerate(blocks):
            prefix = _with_deep_prompt(deep, i, prefix, groups)
            prefix, names = packed_block(
                block, prefix, names, layout, groups, first=i == 0, last=i == len(blocks) - 1
            )
        features = self.text_projection(self.text_encoder.layer_norm(names))  # [G, C, projection]
        return ops.take(features, layout.restore, axis=1)

    def get_config(self):
        config = super().get_config()
        # The layers themselves, not serialised copies: Keras serialises them
        # and marks them as shared when another layer's config holds them
        # too (two encoders on one text tower), so that loading restores one
        # tower; with copies the second finds no weights in the file.
        config.update(
            {
                "text_encoder": self.text_encoder,
                "text_projection": self.text_projection,
                "mode": self.mode,
                "class_chunk_size": self.class_chunk_size,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("text_encoder", "text_projection"):
            if isinstance(config[key], dict):
                config[key] = keras.layers.deserialize(config[key])
        return super().from_config(config)


def _fixed_value(token_ids):
    """The token ids as a NumPy array when their value is fixed, else as given.

    A NumPy array, or a TensorFlow constant (what Keras makes of a NumPy
    argument, eagerly or inside `fit`'s graph), has a fixed value; graph
    inputs (an exported signature's token ids) do not.
    """
    if isinstance(token_ids, np.ndarray) or keras.backend.backend() != "tensorflow":
        return token_ids
    import tensorflow as tf

    if not tf.is_tensor(token_ids):
        return token_ids
    value = tf.get_static_value(token_ids)
    return token_ids if value is None else np.asarray(value)


def deep_prompt(deep_context, block_index, rows):
    """MaPLe's prompt that enters block `block_index`, `[rows, M, D]`, or None for none.

    Args:
        deep_context: `[J - 1, M, D]` or None; block `j` (1 <= j < J) takes
            `deep_context[j - 1]`.
        block_index: the block's index from 0.
        rows: sequences (or groups) that take the same prompt.
    """
    if deep_context is None or not 1 <= block_index <= deep_context.shape[0]:
        return None
    return ops.broadcast_to(deep_context[block_index - 1][None], (rows, *deep_context.shape[1:]))


def _with_deep_prompt(deep_context, block_index, prefix, groups):
    """The shared prefix `[SOS][context]`, its context replaced by the block's deep prompt."""
    prompt = deep_prompt(deep_context, block_index, groups)
    return prefix if prompt is None else ops.concatenate([prefix[:, :1], prompt], axis=1)


def shared_prefix_block(block, prefix, names, groups, num_classes, update_prefix=True):
    """One CLIP block for a shared prefix and the name tokens of many classes.

    Args:
        block: a keras-hub `CLIPEncoderLayer` (its weights are used).
        prefix: `[G, P, D]` hidden states of the shared positions.
        names: `[G * C, S, D]` hidden states of each class's later positions.
        groups: G.
        num_classes: C.
        update_prefix: whether to return the prefix's next hidden states
            (not needed after the last block).

    Returns:
        The next `(prefix, names)` hidden states.
    """
    width = block.hidden_dim
    n_prefix = prefix.shape[1]
    n_names = ops.shape(names)[1]
    qkv_kernel, qkv_bias, out_kernel, out_bias = attention_weights(block.attention, width)
    q_prefix, k_prefix, v_prefix = ops.split(
        linear(block.layer_norm_1(prefix), qkv_kernel, qkv_bias), 3, axis=-1
    )
    q_names, k_names, v_names = ops.split(
        linear(block.layer_norm_1(names), qkv_kernel, qkv_bias), 3, axis=-1
    )

    # Each class's name tokens see the whole prefix of their group and, causally, their own tokens.
    causal = ops.tril(ops.ones((n_names, n_names), "bool"))
    visible = ops.concatenate([ops.ones((n_names, n_prefix), "bool"), causal], axis=1)
    attended = _attend_after_prefix(
        block, q_names, k_names, v_names, k_prefix, v_prefix, groups, num_classes, visible
    )
    names = names + linear(attended, out_kernel, out_bias)
    names = names + mlp(block, names)

    if update_prefix:
        prefix = _next_prefix(block, prefix, q_prefix, k_prefix, v_prefix, out_kernel, out_bias)
    return prefix, names


class PackedNames:
    """Where each class's name tokens sit when packed one after another without padding.

    Name tokens are those after the start token, up to and including the end
    token. Classes are packed in order of length, so that the classes of one
    length (a bucket) form a `[classes, length]` block of rows: attention
    runs per bucket, on reshaped slices, with neither padding nor gathers.

    Args:
        token_ids: int NumPy `[C, L]` token ids of the class names.
    """

    def __init__(self, token_ids):
        lengths = np.argmax(token_ids, axis=-1)  # the end token's position = name tokens it closes
        order = np.argsort(lengths, kind="stable")
        self.token_ids = np.concatenate([token_ids[c, 1 : lengths[c] + 1] for c in order])
        self.positions = np.concatenate([np.arange(lengths[c]) for c in order]).astype("int32")
        # Each bucket: (its first packed row, its first class in packed order, classes, length).
        self.buckets = []
        row = first = 0
        for length, count in zip(*np.unique(lengths, return_counts=True)):
            self.buckets.append((row, first, int(count), int(length)))
            row, first = row + count * length, first + count
        self.ends = (np.cumsum(lengths[order]) - 1).astype("int32")  # packed row of each end token
        self.restore = np.argsort(order).astype("int32")  # packed-order index of each class
        self.num_classes = len(lengths)


def packed_block(block, prefix, names, layout, groups, first=False, last=False):
    """One CLIP block for a shared prefix and the packed name tokens of many classes.

    Args:
        block: a keras-hub `CLIPEncoderLayer` (its weights are used).
        prefix: `[G, P, D]` hidden states of the shared positions.
        names: `[G, T, D]` hidden states of the packed name tokens (see
            `PackedNames`), or `[T, D]`, the same for every group, in the
            first block.
        layout: the `PackedNames` of the class set.
        groups: G.
        first: whether `names` is `[T, D]`.
        last: whether this is the last block: then only the end tokens'
            next hidden states are computed and the prefix is not updated.

    Returns:
        The next `(prefix, names)` hidden states; after the last block,
        `(None, [G, C, D])` at the end tokens, classes in packed order.
    """
    width = block.hidden_dim
    n_prefix = prefix.shape[1]
    qkv_kernel, qkv_bias, out_kernel, out_bias = attention_weights(block.attention, width)
    q_prefix, k_prefix, v_prefix = ops.split(
        linear(block.layer_norm_1(prefix), qkv_kernel, qkv_bias), 3, axis=-1
    )

    # In the first block the name tokens are the same for every group: their
    # projections run once and are broadcast to the groups per bucket.
    def rows(x, start, stop):  # [(G,) T, n] -> [G, stop - start, n]
        if first:
            return ops.broadcast_to(x[None, start:stop], (groups, stop - start, x.shape[-1]))
        return x[:, start:stop]

    def attend(query, keys_values, classes, length, visible):
        keys, values = ops.split(ops.reshape(keys_values, (-1, length, 2 * width)), 2, axis=-1)
        return _attend_after_prefix(block, query, keys, values, k_prefix, v_prefix, groups, classes, visible)

    normed = block.layer_norm_1(names)
    if last:  # only the end tokens' features are read: their queries alone
        keys_values = linear(normed, qkv_kernel[:, width:], qkv_bias[width:])
        ends = ops.take(normed, layout.ends, axis=0 if first else 1)
        queries = linear(ends, qkv_kernel[:, :width], qkv_bias[:width])
        attended = []
        for row, start, classes, length in layout.buckets:
            query = ops.reshape(rows(queries, start, start + classes), (-1, 1, width))
            visible = np.ones((1, n_prefix + length), bool)
            kv = rows(keys_values, row, row + classes * length)
            attended.append(ops.reshape(attend(query, kv, classes, length, visible), (groups, classes, width)))
        hidden = rows(ops.take(names, layout.ends, axis=0 if first else 1), 0, layout.num_classes)
        hidden = hidden + linear(ops.concatenate(attended, axis=1), out_kernel, out_bias)
        return None, hidden + mlp(block, hidden)

    qkv = linear(normed, qkv_kernel, qkv_bias)
    attended = []
    for row, _, classes, length in layout.buckets:
        part = ops.reshape(rows(qkv, row, row + classes * length), (-1, length, 3 * width))
        visible = np.concatenate([np.ones((length, n_prefix), bool), np.tri(length, dtype=bool)], axis=1)
        out = attend(part[..., :width], part[..., width:], classes, length, visible)
        attended.append(ops.reshape(out, (groups, classes * length, width)))
    names = names + linear(ops.concatenate(attended, axis=1), out_kernel, out_bias)  # broadcast in the first block
    names = names + mlp(block, names)
    return _next_prefix(block, prefix, q_prefix, k_prefix, v_prefix, out_kernel, out_bias), names


def _attend_after_prefix(block, query, keys, values, k_prefix, v_prefix, groups, num_classes, visible):
    """Attention of each class's tokens to their group's prefix and to the class's own tokens.

    Args:
        block: the `CLIPEncoderLayer` (for its head count).
        query: `[G * C, Q, D]` queries of each class's tokens.
        keys, values: `[G * C, S, D]` of each class's tokens.
        k_prefix, v_prefix: `[G, P, D]` of each group's prefix.
        groups: G.
        num_classes: C.
        visible: boolean mask over the `P + S` keys, broadcastable to
            `[G * C, heads, Q, P + S]`.

    Returns:
        `[G * C, Q, D]`, before the output projection.
    """
    width = block.hidden_dim
    n_prefix = k_prefix.shape[1]

    # The prefix joins every class's keys and values, so that attention is
    # one batched matmul per sequence (4-D einsums; TensorFlow's 5-D ones are slow).
    def with_prefix(prefix_part, names_part):
        shared = ops.broadcast_to(prefix_part[:, None], (groups, num_classes, n_prefix, width))
        shared = ops.reshape(shared, (-1, n_prefix, width))
        return ops.concatenate([shared, names_part], axis=1)

    return scaled_attention(
        query, with_prefix(k_prefix, keys), with_prefix(v_prefix, values), block.num_heads, visible
    )


def _next_prefix(block, prefix, query, keys, values, out_kernel, out_bias):
    """The shared prefix's next hidden states: causal attention among its own positions."""
    n_prefix = prefix.shape[1]
    if n_prefix == 1:  # the start token alone attends only to itself
        attended = values
    else:
        causal = ops.tril(ops.ones((n_prefix, n_prefix), "bool"))
        attended = scaled_attention(query, keys, values, block.num_heads, causal)
    prefix = prefix + linear(attended, out_kernel, out_bias)
    return prefix + mlp(block, prefix)
