"""Class names and prompt texts, tokenised as the models use them."""

import collections

from cocoop_tf.clip.tokenizer import encode
from cocoop_tf.clip.tokenizer import tokenize


def clean_classnames(classnames):
    """Validates class names and turns underscores into spaces, as CoOp does.

    The one place where names are cleaned: datasets (`ImageDataset.classnames`),
    models, results files and tables all hold the cleaned form, which is
    what the paper prints; cleaning a cleaned name changes nothing.

    Args:
        classnames: a non-empty sequence of non-empty strings.

    Returns:
        The cleaned names as a list.
    """
    if isinstance(classnames, str):
        raise TypeError(
            f"Expected a list of class names, got the string {classnames!r}; "
            f"wrap it in a list: [{classnames!r}]."
        )
    classnames = list(classnames)
    if not classnames:
        raise ValueError("The class list is empty; give at least one class name.")
    cleaned = []
    for name in classnames:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Invalid class name {name!r}: expected a non-empty string.")
        cleaned.append(name.replace("_", " ").strip())
    duplicates = sorted(n for n, count in collections.Counter(cleaned).items() if count > 1)
    if duplicates:
        raise ValueError(f"Duplicate class names: {duplicates}.")
    return cleaned


# One token covers at most 32 characters (the vocabulary's longest entry); twice
# that per token leaves room for what the tokenizer's cleanup drops (spaces, HTML entities).
CHARS_PER_TOKEN = 64


def check_text_length(text, context_length, what):
    """Refuses, before it is tokenised, a text far longer than the context could hold.

    Tokenising costs time and memory with the text's length (a word's
    byte-pair merges grow with its square); no text this long fits.

    Args:
        text: a prompt, class name or context's words.
        context_length: the text encoder's context length.
        what: how the error names the text ("The class name 'x'").
    """
    if len(text) > context_length * CHARS_PER_TOKEN:
        raise ValueError(
            f"{what} is {len(text)} characters long: far more than the text encoder's context "
            f"of {context_length} tokens can hold. Shorten it."
        )


def shown(value):
    """`repr(value)` cut to 60 characters, for an error that quotes a file's or a user's value."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def tokenize_prompts(texts, classnames, context_length, reserved=0):
    """Tokenises one prompt text per class, naming the class that does not fit.

    Args:
        texts: the prompt strings, one per entry of `classnames`.
        classnames: the class each text was made for (used in errors).
        context_length: the text encoder's context length.
        reserved: positions taken by learned context vectors, which must
            fit beside each text.

    Returns:
        int32 array [len(texts), context_length].
    """
    for text, name in zip(texts, classnames):
        check_text_length(text, context_length, f"The class name {shown(name)}")
        needed = len(encode(text)) + 2 + reserved
        if needed > context_length:
            raise ValueError(
                f"The class name {name!r} does not fit the text encoder's context: "
                f"its prompt {text!r} needs {needed} positions (start and end "
                f"tokens{f' and {reserved} context vectors' if reserved else ''} "
                f"included) but the context length is {context_length}. Shorten "
                "the class name."
            )
    token_ids = tokenize(texts, context_length)
    _check_distinct(token_ids, classnames)
    return token_ids


def _check_distinct(token_ids, classnames):
    """Refuses two classes whose prompts are the same ids: the second could never be predicted.

    CLIP's tokenizer lower-cases, collapses whitespace, fixes text (ftfy) and
    splits punctuation into words of its own, so "Cat" and "cat", or
    "t-shirt" and "t - shirt", are one text to the model.
    """
    rows = collections.defaultdict(list)  # a class's rows: one per template
    for row, name in zip(token_ids, classnames):
        rows[name].append(row.tobytes())
    owners = {}
    for name, texts in rows.items():
        other = owners.setdefault(b"".join(texts), name)
        if other != name:
            raise ValueError(
                f"The class names {other!r} and {name!r} are the same text to CLIP's tokenizer, "
                "which ignores case, repeated spaces and spaces around punctuation: the model "
                f"could never predict {name!r}. Rename one of the two classes, or merge them."
            )


def tokenize_classnames(classnames, context_length=77, n_ctx=0):
    """The token ids of each class name as CoOp and CoCoOp models take them.

    Each row is `[SOS] name tokens [.] [EOS] 0...` for the text `"{name}."`
    (underscores become spaces). A prompt learner puts its `n_ctx` context
    vectors between the start token and the name, giving the reference
    implementation's prompt `"{ctx words} {name}."`. This is also the
    `token_ids` input of exported models: tokenise new class names with it,
    on any machine, and send them with the images.

    Args:
        classnames: list of class names.
        context_length: the text encoder's context length (77 for CLIP).
        n_ctx: context vectors that must fit beside each name.

    Returns:
        int32 array `[num_classes, context_length]`.
    """
    names = clean_classnames(classnames)
    return tokenize_prompts([f"{name}." for name in names], names, context_length, n_ctx)
