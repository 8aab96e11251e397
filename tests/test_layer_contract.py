"""Every layer of `cocoop_tf.layers` keeps the Keras layer contract (see `layer_harness`)."""

import functools
import inspect
import os
import re

import keras
import numpy as np
import pytest
from layer_harness import LayerCase
from layer_harness import check_config_round_trip
from layer_harness import check_eager_call
from layer_harness import check_mixed_precision
from layer_harness import check_symbolic_call
from layer_harness import functional_model
from layer_harness import load_in_fresh_process
from layer_harness import save_model

import cocoop_tf
from cocoop_tf.layers import CLIPImageEncoder
from cocoop_tf.layers import CLIPImageNormalization
from cocoop_tf.layers import IndependentPromptLearner
from cocoop_tf.layers import MetaNet
from cocoop_tf.layers import MultiModalPromptLearner
from cocoop_tf.layers import PromptLearner
from cocoop_tf.layers import PromptTextEncoder

# random_tiny: 32x32 images, projection 32, text width 64, context length 77.
RNG = np.random.default_rng(0)
TOKEN_IDS = cocoop_tf.tokenize_classnames(["cat", "red car", "a small grey dog"], n_ctx=4)
CONTEXT = RNG.normal(0, 0.1, (2, 4, 64)).astype("float32")
CLASS_CONTEXTS = RNG.normal(0, 0.1, (2, 3, 4, 64)).astype("float32")


@functools.lru_cache(maxsize=None)
def backbone(dtype=None):
    return cocoop_tf.load_clip("random_tiny", dtype=dtype)


def image_encoder(dtype=None):
    clip = backbone(dtype)
    return CLIPImageEncoder(clip.vision_encoder, clip.vision_pooler, clip.vision_projection, dtype=dtype)


def text_encoder(dtype=None, **kwargs):
    clip = backbone(dtype)
    return PromptTextEncoder(clip.text_encoder, clip.text_projection, dtype=dtype, **kwargs)


CASES = [
    LayerCase(
        "image_encoder",
        image_encoder,
        inputs=(RNG.uniform(0, 255, (2, 32, 32, 3)).astype("float32"),),
        symbolic_inputs=lambda: (keras.Input((32, 32, 3)),),
        symbolic_shape=(None, 32),
    ),
    LayerCase(
        "image_normalization",
        lambda dtype: CLIPImageNormalization(32, dtype=dtype),
        inputs=(RNG.uniform(0, 255, (2, 32, 32, 3)).astype("float32"),),
        symbolic_inputs=lambda: (keras.Input((32, 32, 3)),),
        symbolic_shape=(None, 32, 32, 3),
    ),
    LayerCase(
        "meta_net",
        lambda dtype: MetaNet(64, reduction=4, dtype=dtype),
        inputs=(RNG.normal(size=(3, 32)).astype("float32"),),
        symbolic_inputs=lambda: (keras.Input((32,)),),
        symbolic_shape=(None, 64),
    ),
    LayerCase(
        "prompt_learner_with_bias",
        lambda dtype: PromptLearner(4, 64, dtype=dtype),
        inputs=(RNG.normal(size=(3, 64)).astype("float32"),),
        symbolic_inputs=lambda: (keras.Input((64,)),),
        symbolic_shape=(None, 4, 64),
    ),
    LayerCase("prompt_learner_shared", lambda dtype: PromptLearner(4, 64, dtype=dtype)),
    LayerCase(
        "prompt_learner_class_specific",
        lambda dtype: PromptLearner(3, 64, num_classes=2, dtype=dtype),
    ),
    LayerCase("multimodal_prompt_learner", lambda dtype: MultiModalPromptLearner(2, 64, 48, depth=3, dtype=dtype)),
    LayerCase("multimodal_prompt_learner_shallow", lambda dtype: MultiModalPromptLearner(3, 64, 48, depth=1, dtype=dtype)),
    LayerCase(
        "independent_prompt_learner",
        lambda dtype: IndependentPromptLearner(2, 64, 48, depth=3, n_ctx_vision=3, vision_depth=2, dtype=dtype),
    ),
    LayerCase(
        "independent_prompt_learner_text_only",
        lambda dtype: IndependentPromptLearner(3, 64, 48, depth=1, vision_depth=0, dtype=dtype),
    ),
    LayerCase(
        "prompt_text_encoder_deep_prompts",
        text_encoder,
        inputs=(CONTEXT[:1], TOKEN_IDS, RNG.normal(0, 0.1, (1, 4, 64)).astype("float32")),
        symbolic_inputs=lambda: (keras.Input((4, 64), batch_size=1), TOKEN_IDS, keras.Input((4, 64), batch_size=1)),
        symbolic_shape=(1, 3, 32),
    ),
    LayerCase(
        "image_encoder_vision_prompts",
        image_encoder,
        inputs=(
            RNG.uniform(0, 255, (2, 32, 32, 3)).astype("float32"),
            RNG.normal(0, 0.1, (2, 64)).astype("float32"),
            RNG.normal(0, 0.1, (1, 2, 64)).astype("float32"),
        ),
    ),
    LayerCase(
        "prompt_text_encoder_fixed_classes",
        text_encoder,
        inputs=(CONTEXT, TOKEN_IDS),
        # A NumPy class set stays a constant of the model: its count is known.
        symbolic_inputs=lambda: (keras.Input((4, 64)), TOKEN_IDS),
        symbolic_shape=(None, 3, 32),
    ),
    LayerCase(
        "prompt_text_encoder_class_input",
        lambda dtype: text_encoder(dtype, mode="reference", class_chunk_size=2),
        inputs=(CONTEXT, TOKEN_IDS),
        symbolic_inputs=lambda: (keras.Input((4, 64)), keras.Input((77,), dtype="int32")),
        symbolic_shape=(None, None, 32),
    ),
    LayerCase(
        "prompt_text_encoder_class_contexts",
        text_encoder,
        inputs=(CLASS_CONTEXTS, TOKEN_IDS),
        # One context per class: the class count is the context's.
        symbolic_inputs=lambda: (keras.Input((3, 4, 64)), keras.Input((77,), dtype="int32")),
        symbolic_shape=(None, 3, 32),
    ),
]
SYMBOLIC_CASES = [case for case in CASES if case.symbolic_inputs]
LAYERS = [
    value for value in vars(cocoop_tf.layers).values()
    if isinstance(value, type) and issubclass(value, keras.layers.Layer)
]


def _ids(cases):
    return pytest.mark.parametrize("case", cases, ids=[case.name for case in cases])


def test_every_layer_has_a_case():
    checked = {type(case.make(None)) for case in CASES}
    assert checked == set(LAYERS)


@_ids(CASES)
def test_config_round_trip(case):
    check_config_round_trip(case)


@_ids(SYMBOLIC_CASES)
def test_symbolic_call(case):
    check_symbolic_call(case)


@_ids(CASES)
def test_eager_call(case):
    check_eager_call(case)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@_ids(CASES)
def test_mixed_precision(case, policy):
    check_mixed_precision(case, policy)


def _shared_text_tower_model():
    """Two encoders on one text tower: the file must hold it once and load it once."""
    context, ids = keras.Input((4, 64)), keras.Input((77,), dtype="int32")
    outputs = [text_encoder()(context, TOKEN_IDS), text_encoder(mode="reference")(context, ids)]
    return keras.Model([context, ids], outputs), [CONTEXT, TOKEN_IDS]


@pytest.fixture(scope="module")
def saved_and_loaded(tmp_path_factory):
    """Each case's functional model saved here and loaded in one fresh process."""
    folder = tmp_path_factory.mktemp("layers")
    models = {case.name: functional_model(case) for case in SYMBOLIC_CASES}
    models["shared_text_tower"] = _shared_text_tower_model()
    expected = {name: save_model(folder, name, *model) for name, model in models.items()}
    return folder, expected, load_in_fresh_process(folder, list(models))


@_ids(SYMBOLIC_CASES)
def test_keras_file_loads_in_a_fresh_process(saved_and_loaded, case):
    _, expected, loaded = saved_and_loaded
    np.testing.assert_allclose(np.asarray(loaded[case.name]), expected[case.name], rtol=1e-6, atol=1e-6)


def test_text_tower_shared_by_two_encoders_is_saved_and_loaded_once(saved_and_loaded):
    folder, expected, loaded = saved_and_loaded
    for got, want in zip(loaded["shared_text_tower"], expected["shared_text_tower"]):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
    single = os.path.getsize(folder / "prompt_text_encoder_fixed_classes.keras")
    assert os.path.getsize(folder / "shared_text_tower.keras") < 1.1 * single


@pytest.mark.parametrize(
    "layer",
    [
        *LAYERS, cocoop_tf.ZeroShotCLIP, cocoop_tf.CoOp, cocoop_tf.CoCoOp, cocoop_tf.KgCoOp, cocoop_tf.MaPLe,
        cocoop_tf.IVLP, cocoop_tf.PromptSRC, cocoop_tf.training.GaussianPromptAggregation,
    ],
    ids=lambda layer: layer.__name__,
)
def test_docstring_example_runs(layer):
    blocks = re.findall(r"```python\n(.*?)```", inspect.getdoc(layer), re.DOTALL)
    assert blocks, f"{layer.__name__} has no Example block"
    for block in blocks:
        exec(block, {"np": np, "keras": keras, "cocoop_tf": cocoop_tf})


def test_symbolic_calls_check_their_inputs():
    with pytest.raises(ValueError, match="32x32 pixels"):
        CLIPImageNormalization(32)(keras.Input((224, 224, 3)))
    with pytest.raises(ValueError, match="needs a shared"):
        PromptLearner(4, 64, num_classes=2)(keras.Input((64,)))
    with pytest.raises(ValueError, match=r"bias of shape \[batch, 64\]"):
        PromptLearner(4, 64)(keras.Input((32,)))
    with pytest.raises(ValueError, match="context of shape"):
        text_encoder()(keras.Input((64,)), TOKEN_IDS)
