"""Tests for cocoop_tf.clip.tokenizer.

Parity is checked against instant_clip_tokenizer, an independent implementation
of CLIP's tokenizer, on real dataset class names and on hand-written hard cases.
"""

import ast
import importlib.util
import pathlib
import re

import numpy as np
import pytest

from cocoop_tf.clip import tokenizer as tok

import instant_clip_tokenizer as instant


@pytest.fixture(scope="module")
def reference():
    return instant.Tokenizer()


def _reference_tokenize(reference, texts, context_length=77):
    return np.asarray(reference.tokenize_batch(list(texts), context_length), dtype=np.int32)


def _tfds_dir():
    # find_spec locates the package without importing (slow) TFDS itself.
    spec = importlib.util.find_spec("tensorflow_datasets")
    return pathlib.Path(spec.origin).parent


def _lines(path):
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _python_list(path, name):
    """Reads a module-level list literal from a source file without importing it."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise LookupError(f"{name} not found in {path}")


def _split_camel(name):
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)


def _class_names():
    """Class names of the eleven CoOp datasets, formatted roughly as CoOp does."""
    root = _tfds_dir()
    ic = root / "image_classification"
    sources = {
        # siscore ships the human-readable ImageNet names; keep the first synonym.
        "imagenet": [n.split(",")[0] for n in
                     _python_list(root / "datasets/siscore/labels.py", "IMAGENET_LABELS_LIST")],
        "caltech101": _lines(ic / "caltech101_labels.txt"),
        # "/b/bakery/shop" -> "shop bakery", as CoOp reverses the sub-category path.
        "sun397": [" ".join(n.split("/")[2:][::-1]) for n in _lines(ic / "sun397_labels.txt")],
        "food101": _lines(ic / "food-101_classes.txt"),
        "dtd": _lines(ic / "dtd_key_attributes.txt"),
        "ucf101": [_split_camel(n) for n in _lines(root / "video/ucf101_labels.txt")],
        "oxford_pets": _python_list(
            root / "datasets/oxford_iiit_pet/oxford_iiit_pet_dataset_builder.py", "_LABEL_CLASSES"),
        "oxford_flowers": _python_list(
            root / "datasets/oxford_flowers102/oxford_flowers102_dataset_builder.py", "_NAMES"),
        "stanford_cars": _python_list(ic / "cars196.py", "_NAMES"),
        "eurosat": [_split_camel(n) for n in _python_list(ic / "eurosat.py", "_LABELS")],
    }
    names = [n.replace("_", " ") for values in sources.values() for n in values]
    assert len(names) > 1500, {k: len(v) for k, v in sources.items()}
    return names


HARD_CASES = [
    "Café crème brûlée", "naïve", "Straße", "İstanbul", "日本語", "Ελληνικά кириллица",
    "emoji 😀 👍🏽 🇫🇷", "rock'n'roll", "it's", "I'LL we've they'd", "a--b", "!!!",
    "(parenthesis)", "[x] {y} <z> \\ / |", "747-400", "2012", "3.14", "Boeing 737-800",
    "½ ² ٣", "  two   spaces\t\ttabs\nnewline  ", "UPPER CASE", "MiXeD CaSe", "", "   ",
    "a photo of a dog.", "a photo of a {}.", "x" * 40, "supercalifragilisticexpialidocious",
]

# Inputs that OpenAI's cleanup (ftfy, HTML unescaping) changes, with the cleaned text
# written out by hand; the reference implementation does no such cleanup.
CLEANUP_CASES = [
    ("&amp; &lt;3", "& <3"),
    ("&amp;amp; &quot;hi&quot;", '& "hi"'),
    ("cafÃ© crÃ¨me brÃ»lÃ©e", "café crème brûlée"),
    ("doesnÃ¢â‚¬â„¢t", "doesn't"),
    ("ﬁsh ＡＢＣ “curly”", 'fish abc "curly"'),
]


def test_known_ids():
    ids = tok.tokenize("a photo of a dog.")
    assert ids.shape == (1, 77) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids[0, :8], [49406, 320, 1125, 539, 320, 1929, 269, 49407])
    assert not ids[0, 8:].any()
    assert tok.encode("a photo of a dog.") == [320, 1125, 539, 320, 1929, 269]
    assert (tok.SOT_TOKEN_ID, tok.EOT_TOKEN_ID, tok.VOCABULARY_SIZE) == (49406, 49407, 49408)


def test_known_ids_match_reference(reference):
    assert reference.encode("a photo of a dog.") == [320, 1125, 539, 320, 1929, 269]
    assert (reference.start_of_text(), reference.end_of_text()) == (49406, 49407)


def test_parity_with_reference_on_class_names_and_prompts(reference):
    names = _class_names()
    texts = names + [f"a photo of a {n}." for n in names]
    np.testing.assert_array_equal(tok.tokenize(texts), _reference_tokenize(reference, texts))


@pytest.mark.parametrize("text", HARD_CASES)
def test_parity_with_reference_on_hard_cases(reference, text):
    assert tok.encode(text) == reference.encode(text.lower())
    np.testing.assert_array_equal(tok.tokenize(text), _reference_tokenize(reference, [text]))


@pytest.mark.parametrize("raw,cleaned", CLEANUP_CASES)
def test_text_cleanup(reference, raw, cleaned):
    assert tok.encode(raw) == reference.encode(cleaned.lower())


def test_special_token_strings_map_to_special_ids():
    # OpenAI's tokenizer recognises these literal strings; BPE would split them.
    assert tok.encode("<|startoftext|>hi<|endoftext|>") == [49406, 1883, 49407]


def test_empty_text():
    assert tok.encode("") == []
    np.testing.assert_array_equal(tok.tokenize("", context_length=4), [[49406, 49407, 0, 0]])


def test_batch_shape_and_tuple_input():
    ids = tok.tokenize(("a cat", "a dog"), context_length=5)
    assert ids.shape == (2, 5) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids[1], tok.tokenize("a dog", context_length=5)[0])


def test_too_long_text_raises_with_helpful_message():
    short = "one two three four"
    with pytest.raises(ValueError) as err:
        tok.tokenize(short, context_length=4)
    assert repr(short) in str(err.value) and "context length is 4" in str(err.value)
    assert "truncate=True" in str(err.value)

    long = " ".join(f"word{i}" for i in range(100))
    with pytest.raises(ValueError) as err:
        tok.tokenize(["fine", long])
    message = str(err.value)
    assert long[:50] in message and long not in message and "context length is 77" in message


def test_truncate_keeps_prefix_and_ends_with_eot(reference):
    long = " ".join(f"word{i}" for i in range(100))
    ids = tok.tokenize(long, truncate=True)
    assert ids.shape == (1, 77) and ids[0, -1] == tok.EOT_TOKEN_ID and ids[0, 0] == tok.SOT_TOKEN_ID
    assert list(ids[0, 1:-1]) == tok.encode(long)[:75]
    np.testing.assert_array_equal(ids, _reference_tokenize(reference, [long]))


@pytest.mark.parametrize("bad,error", [
    ([], ValueError), ((), ValueError), (["ok", 3], TypeError), ([None], TypeError),
    (b"bytes", TypeError), (42, TypeError),
])
def test_invalid_inputs(bad, error):
    with pytest.raises(error, match=r"texts"):
        tok.tokenize(bad)


def test_context_length_too_small():
    with pytest.raises(ValueError, match="context_length"):
        tok.tokenize("a", context_length=1)


@pytest.mark.parametrize("text", ["a photo of a dog", "the quick brown fox", "zebra", ""])
def test_decode_round_trip(text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.tokenize(text)[0]) == text
