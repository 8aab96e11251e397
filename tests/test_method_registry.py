"""A method added through the registry alone runs through every command: base-to-new and export."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import cocoop_tf
from cocoop_tf.export import export_saved_model
from cocoop_tf.export import serving_token_ids
from cocoop_tf.models import METHODS
from cocoop_tf.models import CLIPClassifier
from cocoop_tf.models import get_method
from cocoop_tf.models import method_names
from cocoop_tf.models import model_from_prompt
from cocoop_tf.models import register_method
from cocoop_tf.models.clip_classifier import l2_normalize
from cocoop_tf.protocols import RunConfig
from cocoop_tf.protocols import load_predictions
from cocoop_tf.protocols import run_protocol
from test_data_helpers import write_class_folders


class TextAdapter(CLIPClassifier):
    """A toy method: zero-shot "{name}." features through a learned linear map."""

    method = "text_adapter"
    display_name = "TextAdapter"
    run_settings = ("reduction",)  # any RunConfig setting reaches the constructor

    def __init__(self, clip, classnames, reduction=16, **kwargs):
        super().__init__(clip, **kwargs)
        self.reduction = reduction
        dim = clip.projection_dim
        self.adapter = keras.layers.Dense(dim, use_bias=False, kernel_initializer="identity", name="adapter")
        self.adapter.build((None, dim))
        self.set_classnames(classnames)

    def tokenize_classnames(self, classnames):
        return cocoop_tf.tokenize_classnames(classnames, self.clip.text_encoder.max_sequence_length, n_ctx=0)

    def class_features(self, token_ids):
        no_context = ops.zeros((1, 0, self.clip.text_encoder.hidden_dim))
        return l2_normalize(self.adapter(self.prompt_text_encoder(no_context, token_ids)[0]))

    def classify(self, images, token_ids):
        image_features = self.encode_images(images)
        logits = ops.matmul(image_features, ops.transpose(self.class_features(token_ids)))
        return self.logit_scale(logits.dtype) * logits

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


@pytest.fixture
def registered():
    register_method(TextAdapter)
    yield TextAdapter
    METHODS.pop(TextAdapter.method)


def test_registry_lists_the_methods_in_order():
    assert method_names() == ["zeroshot", "coop", "cocoop", "kgcoop", "maple", "ivlp", "promptsrc"]
    assert method_names(learns=True) == ["coop", "cocoop", "kgcoop", "maple", "ivlp", "promptsrc"]
    # Run when none are named: the CoCoOp paper's methods.
    assert method_names(by_default=True) == ["zeroshot", "coop", "cocoop"] == RunConfig(backbone="x").methods
    assert get_method("CoCoOp") is get_method("cocoop") is cocoop_tf.CoCoOp
    assert get_method("ivlp") is cocoop_tf.IVLP and get_method("PromptSRC") is cocoop_tf.PromptSRC
    assert cocoop_tf.IVLP.display_name == "IVLP" and cocoop_tf.PromptSRC.display_name == "PromptSRC"
    known = "zeroshot, coop, cocoop, kgcoop, maple, ivlp, promptsrc"
    with pytest.raises(ValueError, match=f"Unknown method 'kgcop'; the methods are {known}"):
        get_method("kgcop")
    with pytest.raises(ValueError, match="taken by CoOp"):
        register_method(type("CoOp2", (cocoop_tf.CoOp,), {"method": "coop"}))


def test_a_registered_method_runs_base_to_new_and_exports(registered, tmp_path):
    names = ["Abyssinian", "american_bulldog", "great-pyrenees", "Bengal"]
    write_class_folders(tmp_path / "pets", {name: 8 for name in names})
    config = RunConfig(
        backbone="random_tiny", methods=["zeroshot", "text_adapter"], seeds=[1], shots=2, epochs=2,
        batch_size=2, eval_batch_size=8, warmup_epochs=0, reduction=4,
    )
    assert "text_adapter" in method_names()
    dataset = str(tmp_path / "pets")
    results = run_protocol(
        "base2new", config, tmp_path / "run", source=dataset, subset="base",
        evaluations=[(dataset, "base"), (dataset, "new")], log=lambda line: None,
    )
    assert list(results["summary"]) == ["zeroshot", "text_adapter"]
    run = [r for r in results["runs"] if r["method"] == "text_adapter"][0]
    for key in ("base", "new"):
        labels, predicted, _ = load_predictions(tmp_path / "run" / run["predictions"][key])
        assert run["accuracy"][key] == pytest.approx(100 * np.mean(labels == predicted))
    assert "| TextAdapter |" in (tmp_path / "run" / "results.md").read_text()

    # Its prompt file rebuilds it from its config, on the backbone given, and it learned.
    clip = cocoop_tf.load_clip("random_tiny")
    prompt = tmp_path / "run" / "runs" / "text_adapter_seed1" / "prompt.safetensors"
    model = model_from_prompt(clip, prompt, classnames=["bengal", "great pyrenees"])
    assert isinstance(model, TextAdapter) and model.reduction == 4
    kernel = np.asarray(model.adapter.kernel)
    assert not np.allclose(kernel, np.eye(len(kernel)))

    # Exported, it serves new classes given as token ids, in bare TensorFlow.
    path = export_saved_model(model, os.fspath(tmp_path / "export"))
    served = tf.saved_model.load(path)
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    token_ids = serving_token_ids(model, ["sphynx", "pug", "beagle"])
    logits = served.signatures["serving_default"](images=images, token_ids=token_ids)["logits"]
    np.testing.assert_allclose(logits, model.classify(images, token_ids), rtol=1e-4, atol=1e-4)
    features = served.signatures["text_features"](token_ids=token_ids)["text_features"]
    np.testing.assert_allclose(features, model.class_features(token_ids), rtol=1e-4, atol=1e-5)
