"""Class names and prompt texts, tokenised as the models use them."""

from cocoop_tf.clip.tokenizer import tokenize


def clean_classnames(classnames):
    """Validates class names and turns underscores into spaces, as CoOp does.

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
    duplicates = sorted({n for n in cleaned if cleaned.count(n) > 1})
    if duplicates:
        raise ValueError(f"Duplicate class names: {duplicates}.")
    return cleaned


def tokenize_prompts(texts, classnames, context_length):
    """Tokenises one prompt text per class, naming the class that does not fit.

    Args:
        texts: the prompt strings, one per entry of `classnames`.
        classnames: the class each text was made for (used in errors).
        context_length: the text encoder's context length.

    Returns:
        int32 array [len(texts), context_length].
    """
    try:
        return tokenize(texts, context_length)
    except ValueError:
        for text, name in zip(texts, classnames):
            try:
                tokenize(text, context_length)
            except ValueError as error:
                raise ValueError(
                    f"The class name {name!r} does not fit the text encoder's "
                    f"context: {error}"
                ) from None
        raise
