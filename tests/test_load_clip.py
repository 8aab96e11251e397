"""`load_clip` against independent PyTorch references saved in the real formats."""

import copy
import json

import keras
import keras_hub
import numpy as np
import pytest
import safetensors.torch
import torch
import transformers
from conftest import max_relative_difference
from conftest import normalized_nchw
from conftest import randomize_torch_module
from reference_openai_clip import OpenAICLIP

import cocoop_tf
from cocoop_tf.clip.convert import CheckpointError

TEXTS = [
    "a photo of a dog.",
    "a photo of a yellow lady's slipper, a type of flower.",
    "x",
    "Boeing 737-800 over Zürich",
]
TOLERANCE = 1e-4


def _keras_features(backbone, images, token_ids):
    x = keras.ops.convert_to_tensor(normalized_nchw(images).transpose(0, 2, 3, 1))
    image = backbone.get_vision_embeddings(x)
    text = backbone.get_text_embeddings(keras.ops.convert_to_tensor(token_ids))
    return np.asarray(image), np.asarray(text)


def _zero_shot_logits(backbone, images, classnames, template):
    model = cocoop_tf.ZeroShotCLIP(backbone, classnames, template=template)
    return np.asarray(model(images))


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """A random transformers CLIPModel with odd sizes, written by save_pretrained."""
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=60, intermediate_size=92,
            num_hidden_layers=2, num_attention_heads=5,
            max_position_embeddings=77, hidden_act="quick_gelu",
            eos_token_id=49407, bos_token_id=49406, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=72, intermediate_size=110, num_hidden_layers=2,
            num_attention_heads=3, image_size=40, patch_size=8,
            hidden_act="quick_gelu",
        ),
        projection_dim=56,
    )
    model = randomize_torch_module(transformers.CLIPModel(config), seed=1).eval()
    folder = tmp_path_factory.mktemp("hf_clip")
    model.save_pretrained(folder)
    return folder, model


def _hf_reference(model, images, token_ids):
    with torch.no_grad():
        pixels = torch.from_numpy(normalized_nchw(images))
        ids = torch.from_numpy(token_ids.astype(np.int64))
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=ids)
        image = getattr(image, "pooler_output", image)
        text = getattr(text, "pooler_output", text)
        logits = model(input_ids=ids, pixel_values=pixels).logits_per_image
    return image.numpy(), text.numpy(), logits.numpy()


def test_hugging_face_folder_matches_transformers(hf_checkpoint, rng):
    folder, model = hf_checkpoint
    images = rng.uniform(0, 255, (3, 40, 40, 3)).astype("float32")
    token_ids = cocoop_tf.tokenize(TEXTS)
    ref_image, ref_text, ref_logits = _hf_reference(model, images, token_ids)

    backbone = cocoop_tf.load_clip(folder)
    image, text = _keras_features(backbone, images, token_ids)
    assert max_relative_difference(image, ref_image) <= TOLERANCE
    assert max_relative_difference(text, ref_text) <= TOLERANCE
    logits = _zero_shot_logits(backbone, images, TEXTS, "{}")
    assert max_relative_difference(logits, ref_logits) <= TOLERANCE
    # The architecture comes from config.json, nothing assumed.
    assert backbone.vision_encoder.num_heads == 3
    assert backbone.text_encoder.num_heads == 5
    assert backbone.text_encoder.layer_norm.epsilon == 1e-5
    assert float(backbone.clip_head.logit_scale) == pytest.approx(4.6052)
    assert not backbone.trainable_weights


def test_hugging_face_pytorch_bin_folder(hf_checkpoint, tmp_path, rng):
    folder, model = hf_checkpoint
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    images = rng.uniform(0, 255, (2, 40, 40, 3)).astype("float32")
    token_ids = cocoop_tf.tokenize(TEXTS)
    ref_image, ref_text, _ = _hf_reference(model, images, token_ids)
    image, text = _keras_features(cocoop_tf.load_clip(tmp_path), images, token_ids)
    assert max_relative_difference(image, ref_image) <= TOLERANCE
    assert max_relative_difference(text, ref_text) <= TOLERANCE


def _openai_reference(model, images, token_ids):
    with torch.no_grad():
        pixels = torch.from_numpy(normalized_nchw(images))
        ids = torch.from_numpy(token_ids.astype(np.int64))
        return (
            model.encode_image(pixels).numpy(),
            model.encode_text(ids).numpy(),
            model(pixels, ids).numpy(),
        )


def _check_openai(backbone, model, rng, image_size):
    images = rng.uniform(0, 255, (3, image_size, image_size, 3)).astype("float32")
    token_ids = cocoop_tf.tokenize(TEXTS)
    ref_image, ref_text, ref_logits = _openai_reference(model, images, token_ids)
    image, text = _keras_features(backbone, images, token_ids)
    assert max_relative_difference(image, ref_image) <= TOLERANCE
    assert max_relative_difference(text, ref_text) <= TOLERANCE
    logits = _zero_shot_logits(backbone, images, TEXTS, "{}")
    assert max_relative_difference(logits, ref_logits) <= TOLERANCE


@pytest.fixture(scope="module")
def openai_model():
    # Widths not multiples of 64: OpenAI's rule gives 2 vision heads of 80, 1 text head of 96.
    model = OpenAICLIP(
        embed_dim=56, resolution=40, patch=8, vision_width=160, vision_layers=2,
        context_length=77, vocab_size=49408, text_width=96, text_layers=3,
    )
    return randomize_torch_module(model, seed=2).eval()


def test_openai_state_dict_pt(openai_model, tmp_path, rng):
    path = tmp_path / "clip.pt"
    torch.save(openai_model.state_dict(), path)
    backbone = cocoop_tf.load_clip(path)
    assert backbone.vision_encoder.num_heads == 2
    assert backbone.text_encoder.num_heads == 1
    assert backbone.text_encoder.num_layers == 3
    assert backbone.vision_encoder.image_shape[0] == 40
    _check_openai(backbone, openai_model, rng, 40)


def test_openai_torchscript_archive(openai_model, tmp_path, rng):
    """OpenAI releases TorchScript archives that carry metadata scalars too."""
    archive = copy.deepcopy(openai_model)
    for key, value in (("input_resolution", 40), ("context_length", 77), ("vocab_size", 49408)):
        archive.register_buffer(key, torch.tensor(value))
    example = (torch.zeros(1, 3, 40, 40), torch.ones(1, 77, dtype=torch.long))
    path = tmp_path / "ViT-test.pt"
    torch.jit.save(torch.jit.trace(archive, example, check_trace=False), path)
    assert "input_resolution" in torch.jit.load(path).state_dict()
    _check_openai(cocoop_tf.load_clip(path), openai_model, rng, 40)


def test_float16_torchscript_archive_reads_as_torch_does(openai_model, tmp_path):
    """OpenAI's archives store float16; the reader rebuilds every tensor torch.jit.load does."""
    from cocoop_tf.clip.torchscript import read_torchscript_tensors

    example = (torch.zeros(1, 3, 40, 40), torch.ones(1, 77, dtype=torch.long))
    traced = torch.jit.trace(copy.deepcopy(openai_model), example, check_trace=False).half()
    torch.jit.save(traced, tmp_path / "half.pt")
    expected = torch.jit.load(tmp_path / "half.pt").state_dict()
    tensors = read_torchscript_tensors(tmp_path / "half.pt")
    assert tensors.keys() == expected.keys()
    for name, value in expected.items():
        assert tensors[name].dtype == np.float16, name
        np.testing.assert_array_equal(tensors[name], value.numpy(), err_msg=name)


class PlantingModule(torch.nn.Module):
    """A TorchScript module whose __setstate__, run by torch.jit.load, creates a file."""

    def __init__(self, target: str):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.target = target

    def forward(self, x):
        return x + self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        planted = torch.from_file(state[1], True, 2, dtype=torch.float32)  # writes the file
        self.weight = state[0] + planted
        self.target = state[1]
        self.training = state[2]


def test_torchscript_archive_code_never_runs(tmp_path):
    import subprocess

    target = tmp_path / "planted"
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.script(PlantingModule(str(target))).save(path)
    result = subprocess.run(
        ["cocoop-tf", "zeroshot", "--backbone", path, "--classnames", "a", "--images", "x.jpg"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Not an OpenAI-layout ViT CLIP state dict" in result.stderr
    assert not target.exists()  # read without running the archive's code
    torch.jit.load(path)  # what it would have done
    assert target.exists()


def test_open_clip_checkpoint_safetensors_and_head_override(tmp_path, rng):
    model = OpenAICLIP(
        embed_dim=40, resolution=24, patch=6, vision_width=72, vision_layers=1,
        context_length=77, vocab_size=49408, text_width=60, text_layers=2,
        vision_heads=3, text_heads=5,
    )
    model = randomize_torch_module(model, seed=3).eval()
    path = tmp_path / "open_clip.safetensors"
    safetensors.torch.save_file(model.state_dict(), path)
    backbone = cocoop_tf.load_clip(path, vision_heads=3, text_heads=5)
    _check_openai(backbone, model, rng, 24)
    # open_clip training checkpoints wrap a DataParallel state dict.
    wrapped = tmp_path / "epoch_10.pt"
    torch.save({"epoch": 10, "state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, wrapped)
    _check_openai(cocoop_tf.load_clip(wrapped, vision_heads=3, text_heads=5), model, rng, 24)


def test_keras_hub_preset_folder(tmp_path, rng):
    original = cocoop_tf.load_clip("random_tiny", seed=5)
    original.save_to_preset(str(tmp_path))
    loaded = cocoop_tf.load_clip(tmp_path)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    token_ids = cocoop_tf.tokenize(TEXTS)
    for a, b in zip(
        _keras_features(original, images, token_ids),
        _keras_features(loaded, images, token_ids),
    ):
        np.testing.assert_array_equal(a, b)
    assert loaded.text_encoder.layer_norm.epsilon == 1e-5


def test_keras_hub_preset_name_fixes_text_layer_norm(monkeypatch, tmp_path):
    """keras-hub presets get the 1e-5 final text layer norm of the source models."""
    source = cocoop_tf.load_clip("random_tiny", seed=6)
    stock = keras_hub.models.CLIPBackbone.from_config(
        {**source.get_config(), "text_encoder": {
            **keras.layers.serialize(source.text_encoder),
            "registered_name": "keras_hub>CLIPTextEncoder",
            "class_name": "CLIPTextEncoder", "module": "keras_hub.src.models.clip.clip_text_encoder",
        }}
    )
    stock.set_weights(source.get_weights())
    assert stock.text_encoder.layer_norm.epsilon == 1e-6
    monkeypatch.setattr(
        keras_hub.models.CLIPBackbone, "from_preset", classmethod(lambda cls, name, **kw: stock)
    )
    loaded = cocoop_tf.load_clip("clip_vit_base_patch16")
    assert loaded.text_encoder.layer_norm.epsilon == 1e-5
    for a, b in zip(loaded.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_random_configs_are_seeded_and_frozen():
    a = cocoop_tf.load_clip("random_tiny", seed=1)
    b = cocoop_tf.load_clip("random_tiny", seed=1)
    c = cocoop_tf.load_clip("random_tiny", seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert not all(np.array_equal(x, y) for x, y in zip(a.get_weights(), c.get_weights()))
    assert not a.trainable_weights
    pos = a.vision_encoder.embedding.position_ids
    np.testing.assert_array_equal(np.asarray(pos)[0], np.arange(pos.shape[1]))


# --- bad input ---------------------------------------------------------------


def test_unknown_source_lists_the_options():
    with pytest.raises(ValueError, match="Unknown CLIP source 'clip_vit_nope'.*clip_vit_base_patch16.*random_tiny"):
        cocoop_tf.load_clip("clip_vit_nope")


def test_preset_without_network_says_what_to_do(monkeypatch):
    def offline(cls, name, **kwargs):
        raise ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.CLIPBackbone, "from_preset", classmethod(offline))
    with pytest.raises(RuntimeError, match="need network access.*pass its path"):
        cocoop_tf.load_clip("clip_vit_base_patch16")


def test_folder_that_is_not_a_checkpoint(hf_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        cocoop_tf.load_clip(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(CheckpointError, match="lacks 'vision_config'"):
        cocoop_tf.load_clip(tmp_path)
    (tmp_path / "config.json").write_text((hf_checkpoint[0] / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        cocoop_tf.load_clip(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="neither a Hugging Face config"):
        cocoop_tf.load_clip(tmp_path)


def test_non_clip_hugging_face_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="model_type 'siglip'"):
        cocoop_tf.load_clip(tmp_path)


def test_resnet_checkpoint_is_rejected(tmp_path):
    state = {
        "visual.conv1.weight": torch.zeros(32, 3, 3, 3),
        "visual.layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1),
        "visual.attnpool.positional_embedding": torch.zeros(50, 2048),
        "token_embedding.weight": torch.zeros(49408, 512),
    }
    path = tmp_path / "RN50.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="ResNet CLIP.*only ViT"):
        cocoop_tf.load_clip(path)


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        cocoop_tf.load_clip(path)


def test_truncated_state_dict_names_missing_tensors(openai_model, tmp_path):
    state = dict(openai_model.state_dict())
    del state["ln_final.weight"]
    path = tmp_path / "broken.safetensors"
    safetensors.torch.save_file(state, path)
    with pytest.raises(CheckpointError, match="missing.*final_layer_norm"):
        cocoop_tf.load_clip(path)
