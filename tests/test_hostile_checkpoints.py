"""`load_clip` on damaged and hostile checkpoint files: one clear error, nothing allocated.

Each file is small and in a real format (written by torch or safetensors,
then edited), and each is read under `memory_limit`, so a size the file
declares but does not hold fails the test with MemoryError instead of
being allocated.
"""

import json
import os
import re
import struct
import zipfile
import zlib

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from conftest import memory_limit
from reference_openai_clip import OpenAICLIP

import cocoop_tf
from cocoop_tf.cli import main
from cocoop_tf.clip.convert import CheckpointError
from cocoop_tf.clip.convert import openai_to_hf_names


@pytest.fixture(scope="module")
def openai_state():
    """A tiny OpenAI-layout ViT CLIP state dict (1 block per tower, vocabulary of 100)."""
    model = OpenAICLIP(
        embed_dim=8, resolution=16, patch=8, vision_width=64, vision_layers=1,
        context_length=77, vocab_size=100, text_width=64, text_layers=1,
    )
    return {key: value.detach().numpy() for key, value in model.state_dict().items()}


def _load_refused(path, match):
    with memory_limit(), pytest.raises(CheckpointError, match=match):
        cocoop_tf.load_clip(path)


# --- tensors past their storage -----------------------------------------------


class _Weight(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(15.0).reshape(3, 5))

    def forward(self, x):
        return x + self.w


def _int_op(n):
    """The pickle opcode that pushes the integer n."""
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    return b"\x8a\x08" + n.to_bytes(8, "little", signed=True)


# The offset, size (3, 5) and stride (5, 1) of the one tensor, in either pickle.
_TENSOR_ARGS = re.compile(rb"K\x00(\(?)K\x03K\x05(t|\x86)((?:q.)?)(\(?)K\x05K\x01", re.DOTALL)


def _retensor(src, dst, offset, size, stride):
    """Copies a checkpoint zip, giving its (3, 5) tensor another offset, size and stride."""
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w") as out:
        for member in archive.infolist():
            data = archive.read(member)
            if member.filename.endswith("/data.pkl") and member.filename.count("/") == 1:
                found = _TENSOR_ARGS.search(data)
                data = (
                    data[: found.start()]
                    + _int_op(offset) + found[1] + _int_op(size[0]) + _int_op(size[1])
                    + found[2] + found[3] + found[4] + _int_op(stride[0]) + _int_op(stride[1])
                    + data[found.end():]
                )
            out.writestr(member, data)


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weight")
    torch.jit.save(torch.jit.script(_Weight()), folder / "torchscript.pt")
    torch.save({"w": _Weight().w.detach()}, folder / "state_dict.pt")
    return folder


@pytest.mark.parametrize(
    "offset, size, stride, match",
    [
        (0, (3, 6), (5, 1), r"size \[3, 6\].*runs past its storage of 15"),  # read memory before
        (0, (3, 5), (50_000_000, 1), r"runs past its storage"),  # segfaulted before
        (5, (3, 5), (5, 1), r"offset 5 runs past its storage"),
        (0, (3, 5), (-5, 1), r"unreadable offset, size or stride"),
        (0, (100_000, 100_000), (0, 0), r"repeat their stored data"),  # 40 GB of one storage
    ],
)
def test_torchscript_tensor_outside_its_storage_is_refused(
    weight_files, tmp_path, offset, size, stride, match
):
    path = tmp_path / "ViT-hostile.pt"
    _retensor(weight_files / "torchscript.pt", path, offset, size, stride)
    _load_refused(path, match)


@pytest.mark.parametrize(
    "offset, size, stride, match",
    [
        (0, (3, 6), (5, 1), r"not a readable PyTorch checkpoint \(RuntimeError"),
        (0, (100_000, 100_000), (0, 0), r"repeat their stored data"),
    ],
)
def test_torch_save_tensor_outside_its_storage_is_refused(
    weight_files, tmp_path, offset, size, stride, match
):
    path = tmp_path / "hostile.pt"
    _retensor(weight_files / "state_dict.pt", path, offset, size, stride)
    _load_refused(path, match)


# --- declared sizes: zip members, pickled lengths, legacy storages --------------


def _write_zip(path, members):
    """A zip of (name, payload, uncompressed size, method) members, CRCs unchecked."""
    body, directory = bytearray(), bytearray()
    for name, payload, size, method in members:
        encoded = name.encode()
        crc = zlib.crc32(payload) if method == zipfile.ZIP_STORED else 0
        fields = (method, 0, 0, crc, len(payload), size, len(encoded))
        directory += struct.pack("<IHHHH", 0x02014B50, 20, 20, 0, fields[0])
        directory += struct.pack("<HHIIIHHHHHII", *fields[1:], 0, 0, 0, 0, 0, len(body))
        directory += encoded
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, *fields, 0) + encoded + payload
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), len(body), 0
    )
    path.write_bytes(bytes(body + directory + end))


def _deflated_zeros(mebibytes):
    """A deflate stream of `mebibytes` MiB of zeros, about 1 KB per MiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return chunk * mebibytes + compressor.flush()  # each flushed chunk compresses alike


@pytest.mark.parametrize("source", ["torchscript.pt", "state_dict.pt"])
def test_zip_bomb_is_refused_before_inflating(weight_files, tmp_path, source):
    """2 MB on disk, 2 GiB inflated: refused from the sizes the zip declares."""
    members = []
    with zipfile.ZipFile(weight_files / source) as archive:
        for member in archive.infolist():
            payload = archive.read(member)
            if re.fullmatch(r"[^/]+/data/0", member.filename):
                bomb = _deflated_zeros(2048)
                members.append((member.filename, bomb, 2 << 30, zipfile.ZIP_DEFLATED))
            else:
                members.append((member.filename, payload, len(payload), zipfile.ZIP_STORED))
    path = tmp_path / "bomb.pt"
    _write_zip(path, members)
    assert os.path.getsize(path) < 3 << 20
    _load_refused(path, r"members declare 2,147,48.* bytes uncompressed .*data/0.*zip bomb")


def test_pickled_length_past_the_pickle_is_refused(weight_files, tmp_path):
    """A 20-byte data.pkl declaring a 1 TiB string: Python's unpickler would allocate it."""
    path = tmp_path / "ViT-hostile.pt"
    source = zipfile.ZipFile(weight_files / "torchscript.pt")
    with source as archive, zipfile.ZipFile(path, "w") as out:
        for member in archive.infolist():
            data = archive.read(member)
            if member.filename.endswith("/data.pkl") and member.filename.count("/") == 1:
                data = b"\x80\x02\x8e" + struct.pack("<Q", 1 << 40) + b"abc."
            out.writestr(member, data)
    _load_refused(path, r"damaged pickle \(expected 1099511627776 bytes in a bytes8")


def test_legacy_torch_file_storage_larger_than_the_file_is_refused(tmp_path):
    """PyTorch's pre-zip format allocates each storage at its declared size."""
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.arange(15.0)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    numel = re.search(rb"X\x03\x00\x00\x00cpuq.K\x0f", data, re.DOTALL)
    path.write_bytes(data[: numel.end() - 2] + _int_op(1 << 32) + data[numel.end():])
    _load_refused(path, r"declare 17,179,869,184 bytes of storage but the file has \d+ bytes")


def test_legacy_torch_file_still_loads(openai_state, tmp_path):
    path = tmp_path / "legacy.pt"
    state = {key: torch.from_numpy(value) for key, value in openai_state.items()}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    backbone = cocoop_tf.load_clip(path)
    np.testing.assert_array_equal(
        backbone.text_encoder.embedding.token_embedding.embeddings.numpy(),
        openai_state["token_embedding.weight"],
    )


class _Planter:
    """Pickles as a call to os.mkdir: run by any loader that unpickles code."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_file_code_never_runs(tmp_path, legacy):
    target = tmp_path / "planted"
    path = tmp_path / "clip.pt"
    state = {"w": torch.zeros(2), "x": _Planter(str(target))}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    _load_refused(path, r"holds Python objects.*could run code")
    assert not target.exists()


def test_torch_file_that_is_no_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    _load_refused(path, r"holds a list, not a state dict")


# --- architectures the tensors do not back ------------------------------------


def _save(state, path):
    safetensors.numpy.save_file({k: np.array(v, order="C") for k, v in state.items()}, path)
    return path


def test_tiny_checkpoint_loads(openai_state, tmp_path):
    """The unedited file of the tests below loads (bfloat16 too): they fail for their edits."""
    backbone = cocoop_tf.load_clip(_save(openai_state, tmp_path / "clip.safetensors"))
    assert backbone.text_encoder.num_layers == 1
    path = tmp_path / "bf16.safetensors"
    safetensors.torch.save_file(
        {k: torch.from_numpy(v).bfloat16() for k, v in openai_state.items()}, path
    )
    expected = torch.from_numpy(openai_state["token_embedding.weight"]).bfloat16().float()
    np.testing.assert_array_equal(
        cocoop_tf.load_clip(path).text_encoder.embedding.token_embedding.embeddings.numpy(),
        expected.numpy(),
    )


def test_5000_declared_blocks_are_refused_before_building(openai_state, tmp_path):
    state = dict(openai_state)
    state["transformer.resblocks.4999.ln_1.weight"] = np.ones(64, np.float32)
    path = _save(state, tmp_path / "clip.safetensors")
    assert os.path.getsize(path) < 600_000
    _load_refused(path, r"declares 5000 text transformer blocks; CLIP models have at most 256")


def test_missing_block_tensors_are_named(openai_state, tmp_path):
    state = dict(openai_state)
    state["visual.transformer.resblocks.7.ln_1.weight"] = np.ones(64, np.float32)
    _load_refused(
        _save(state, tmp_path / "clip.safetensors"),
        r"missing \['vision_model.encoder.layers.1.layer_norm1.bias'",
    )


def test_vocabulary_of_an_empty_tensor_is_refused(openai_state, tmp_path):
    state = dict(openai_state)
    state["token_embedding.weight"] = np.zeros((40_000_000, 0), np.float32)
    _load_refused(
        _save(state, tmp_path / "clip.safetensors"),
        r"token_embedding.weight has shape \(40000000, 0\)",
    )


def test_integer_weights_are_refused(openai_state, tmp_path):
    state = dict(openai_state)
    state["ln_final.weight"] = np.ones(64, np.int64)
    _load_refused(
        _save(state, tmp_path / "clip.safetensors"),
        r"final_layer_norm.weight holds int64 values",
    )


def _hf_folder(openai_state, folder, **text_config):
    hf = openai_to_hf_names(openai_state)
    _save(hf, folder / "model.safetensors")
    towers = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=1,
                  num_attention_heads=1, hidden_act="quick_gelu")
    text = dict(towers, vocab_size=100, max_position_embeddings=77)
    config = dict(
        model_type="clip", projection_dim=8,
        vision_config=dict(towers, image_size=16, patch_size=8),
        text_config={**text, **text_config},
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_hugging_face_config_is_checked_against_its_weights(openai_state, tmp_path):
    backbone = cocoop_tf.load_clip(_hf_folder(openai_state, tmp_path))
    assert backbone.text_encoder.vocabulary_size == 100
    _hf_folder(openai_state, tmp_path, vocab_size=40_000_000)
    _load_refused(
        tmp_path,
        r"text_model.embeddings.token_embedding.weight: shape \(100, 64\) does not fit "
        r"\(40000000, 64\)",
    )
    _hf_folder(openai_state, tmp_path, num_hidden_layers=5000)
    _load_refused(tmp_path, r"declares 5000 text transformer blocks")
    _hf_folder(openai_state, tmp_path, hidden_size="64")
    _load_refused(tmp_path, r"config.json's text_config.hidden_size is '64'; it must be a positive")
    (tmp_path / "config.json").write_text("{")
    _load_refused(tmp_path, r"config.json is not valid JSON")


# --- damaged safetensors, through the command line -------------------------------


def _zeroshot_error(path, capsys):
    code = main(["zeroshot", "--backbone", str(path), "--classnames", "a", "--images", "x.jpg"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "unexpected" not in err and "Traceback" not in err, err
    return err


def test_damaged_safetensors_is_one_line_naming_the_file(openai_state, tmp_path, capsys):
    data = _save(openai_state, tmp_path / "clip.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[:-5])
    err = _zeroshot_error(truncated, capsys)
    assert "truncated.safetensors' is not a readable safetensors file (" in err, err
    huge_header = tmp_path / "header.safetensors"
    huge_header.write_bytes(struct.pack("<Q", 10**12) + data[8:])
    err = _zeroshot_error(huge_header, capsys)
    assert "header declares 1,000,000,000,000 bytes" in err, err


def test_hostile_checkpoint_through_the_command_line(openai_state, tmp_path, capsys):
    state = dict(openai_state)
    state["transformer.resblocks.4999.ln_1.weight"] = np.ones(64, np.float32)
    path = _save(state, tmp_path / "clip.safetensors")
    with memory_limit():
        err = _zeroshot_error(path, capsys)
    assert err.startswith("cocoop-tf zeroshot: error: The checkpoint declares 5000 text"), err


# --- keras-hub preset folders ---------------------------------------------------


def test_keras_hub_preset_folder_declaring_more_than_its_weights(tmp_path):
    import h5py

    cocoop_tf.load_clip("random_tiny").save_to_preset(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    original = json.dumps(config)
    config["config"]["text_encoder"]["config"]["num_layers"] = 5000
    (tmp_path / "config.json").write_text(json.dumps(config))
    _load_refused(tmp_path, r"describes a CLIP of [\d,]+ parameters \(2 \+ 5000 blocks\)")
    # HDF5 can declare a dataset it stores nothing of: 40 GB read as fill values.
    (tmp_path / "config.json").write_text(original)
    with h5py.File(tmp_path / "model.weights.h5", "a") as f:
        name = "layers/clip_text_encoder/layers/token_and_position_embedding/token_embedding/vars/0"
        del f[name]
        f.create_dataset(name, shape=(100_000, 100_000), dtype="float32", chunks=(1000, 1000))
    _load_refused(tmp_path, r"model.weights.h5'?: its datasets declare 40,00[\d,]+ bytes")
