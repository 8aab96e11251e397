"""CLIP's byte-level BPE tokenizer, reproducing OpenAI's tokenization offline.

The merges file ships with the package. Text is cleaned (ftfy, HTML entities,
whitespace, lowercase), split into words with CLIP's regular expression, and
each word is BPE-encoded over a byte-to-unicode alphabet.
"""

import functools
import gzip
import html
import importlib.resources
from typing import Sequence, Union

import ftfy
import numpy as np
import regex

SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407
VOCABULARY_SIZE = 49408

# The released CLIP models use exactly this many merges from the file.
_NUM_MERGES = VOCABULARY_SIZE - 2 * 256 - 2
_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
    r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")
# OpenAI maps these literal strings in the text to the special ids, not to BPE.
_SPECIAL = {"<|startoftext|>": (SOT_TOKEN_ID,), "<|endoftext|>": (EOT_TOKEN_ID,)}


def _byte_alphabet() -> dict:
    """Maps each byte to a printable character, keeping printable bytes as is."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in kept]
    # Dict order matters: it defines the first 256 vocabulary ids.
    return {**{b: chr(b) for b in kept},
            **{b: chr(256 + i) for i, b in enumerate(others)}}


_BYTE_TO_CHAR = _byte_alphabet()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


@functools.lru_cache(maxsize=None)
def _vocabulary() -> tuple:
    """Loads (token -> id, id -> token, merge pair -> rank) from the merges file."""
    path = importlib.resources.files(__package__) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES + 1]]
    symbols = list(_BYTE_TO_CHAR.values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    encoder = {tok: i for i, tok in enumerate(tokens)}
    ranks = {pair: i for i, pair in enumerate(merges)}
    return encoder, tokens, ranks


@functools.lru_cache(maxsize=100_000)
def _bpe(word: str) -> tuple:
    """Returns the BPE ids of one pre-tokenized word (bytes already mapped)."""
    encoder, _, ranks = _vocabulary()
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = {(a, b) for a, b in zip(parts, parts[1:])}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return tuple(encoder[p] for p in parts)


def _clean(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def encode(text: str) -> list:
    """Encodes text into CLIP BPE ids.

    Args:
        text: The text to encode.

    Returns:
        The token ids, without the start and end tokens.
    """
    ids = []
    for piece in _PATTERN.findall(_clean(text)):
        if piece in _SPECIAL:
            ids.extend(_SPECIAL[piece])
            continue
        ids.extend(_bpe("".join(_BYTE_TO_CHAR[b] for b in piece.encode("utf-8"))))
    return ids


def decode(ids: Sequence[int]) -> str:
    """Turns token ids back into (cleaned, lowercase) text.

    Args:
        ids: Token ids, optionally with start/end tokens and zero padding.

    Returns:
        The decoded text; word boundaries become single spaces.
    """
    ids = [int(i) for i in ids]
    if EOT_TOKEN_ID in ids:
        ids = ids[:ids.index(EOT_TOKEN_ID)]
    # Encoded text never ends in id 0 ("!" inside a word), so trailing zeros are padding.
    while ids and ids[-1] == 0:
        ids.pop()
    tokens = _vocabulary()[1]
    chars = "".join(tokens[i] for i in ids if i != SOT_TOKEN_ID)
    text = bytes(_CHAR_TO_BYTE[c] for c in chars).decode("utf-8", errors="replace")
    return text.replace("</w>", " ").strip()


def tokenize(texts: Union[str, Sequence[str]], context_length: int = 77,
             truncate: bool = False) -> np.ndarray:
    """Tokenizes texts into a zero-padded id matrix for the CLIP text encoder.

    Args:
        texts: One string or a non-empty list/tuple of strings.
        context_length: Length of each row, start and end tokens included.
        truncate: If True, cut texts that are too long and end them with the
            end token; if False, raise an error for them.

    Returns:
        An int32 array of shape [len(texts), context_length]; each row is
        start token, BPE ids, end token, then zeros.

    Raises:
        ValueError: For an empty input, context_length < 2, or a text that is
            too long while truncate is False.
        TypeError: If texts or one of its elements is not a string.
    """
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a str or a list/tuple of str, got {type(texts).__name__}")
    if not texts:
        raise ValueError("texts is empty: pass at least one string")
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2 (start and end tokens), got {context_length}")
    result = np.zeros((len(texts), context_length), dtype=np.int32)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{row}] must be a str, got {type(text).__name__}: {text!r}")
        ids = [SOT_TOKEN_ID, *encode(text), EOT_TOKEN_ID]
        if len(ids) > context_length:
            if not truncate:
                shown = text if len(text) <= 60 else text[:57] + "..."
                raise ValueError(
                    f"Text {shown!r} needs {len(ids)} tokens (with start/end tokens) but the "
                    f"context length is {context_length}; shorten it or pass truncate=True.")
            ids = ids[:context_length - 1] + [EOT_TOKEN_ID]
        result[row, :len(ids)] = ids
    return result
