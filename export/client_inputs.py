"""What a client sends to an exported model, prepared without TensorFlow.

`token_ids`: the class names, tokenised with CLIP's BPE on the client (the
served graphs contain no tokenizer). `images`: RGB pixel values 0..255 at the
model's resolution, prepared as CLIP evaluates (short side resized with
bicubic interpolation, centre crop).

Needs `numpy`, `pillow` (images; cocoop-tf brings it) and a CLIP tokenizer:
`instant-clip-tokenizer` if installed (small, no TensorFlow), else the one of
an installed cocoop-tf (`pip install -e .` in its repository).
"""

import sys

import numpy as np

START_TOKEN_ID = 49406
END_TOKEN_ID = 49407


def clip_tokenizer():
    """`tokenize(texts, context_length)`: CLIP BPE ids, int32 `[N, context_length]`.

    Texts too long for the context are cut and end with the end token (the
    served graph then refuses a name cut this way). Both tokenizers are
    exact CLIP BPE and give the same ids.

    Raises:
        ImportError: neither is installed, saying what to install.
    """
    try:
        from instant_clip_tokenizer import Tokenizer
    except ImportError:
        pass
    else:
        tokenizer = Tokenizer()
        return lambda texts, context_length: tokenizer.tokenize_batch(texts, context_length)
    try:
        # Imports the package, and with it TensorFlow: a few seconds.
        from cocoop_tf.clip.tokenizer import tokenize
    except ImportError:
        raise ImportError(
            "The clients tokenise class names with CLIP's BPE: install cocoop-tf (`pip install -e .` "
            "in its repository) or, on a machine without TensorFlow, `pip install instant-clip-tokenizer`."
        ) from None
    return lambda texts, context_length: tokenize(texts, context_length, truncate=True)


def tokenize_classnames(classnames, prompt="{}.", context_length=77):
    """The `token_ids` input for `classnames`: int32 `[C, context_length]`.

    Each row holds the CLIP BPE ids of `prompt.format(name)` between the start
    and end tokens, zero padded. Names are cleaned as the model was trained:
    underscores become spaces. CoOp and CoCoOp exports take the prompt
    `"{}."`; a zero-shot export takes its template (see
    `assets.extra/cocoop_tf.json` next to the SavedModel).

    Args:
        classnames: list of class names.
        prompt: the text made of each name, with `{}` for the name.
        context_length: the text encoder's context length (77 for CLIP).
    """
    texts = [prompt.format(name.replace("_", " ").strip()) for name in classnames]
    # The tokenizer cuts long texts; the served graph rejects a cut name.
    return np.asarray(clip_tokenizer()(texts, context_length), np.int32)


def load_images(paths, size):
    """Reads image files as float32 `[N, size, size, 3]`, RGB pixel values 0..255.

    CLIP's test transform: the short side is resized to `size` (bicubic),
    then the centre `size x size` square is cropped. Any format Pillow
    reads is taken (the training pipelines take JPEG, PNG, GIF, BMP and
    WebP).

    Args:
        paths: image file paths.
        size: the model's resolution (224 for ViT-B/16).

    Raises:
        ValueError: a file is not an image Pillow reads, naming it.
    """
    from PIL import Image
    from PIL import UnidentifiedImageError

    images = []
    for path in paths:
        try:
            image = Image.open(path)
        except UnidentifiedImageError:
            raise ValueError(f"{path} is not an image file that Pillow reads.") from None
        with image:
            image = image.convert("RGB")
            width, height = image.size
            scale = size / min(width, height)
            # As torchvision's Resize(size): the long side is rounded down.
            resized = (size, int(height * scale)) if width <= height else (int(width * scale), size)
            image = image.resize(resized, Image.BICUBIC)
            left = round((resized[0] - size) / 2)
            top = round((resized[1] - size) / 2)
            images.append(np.asarray(image.crop((left, top, left + size, top + size)), np.float32))
    return np.stack(images)


def size_problem(image_size, model_size, where):
    """A message when `--image-size` is not the model's resolution, else None.

    Args:
        image_size: the size asked for (`--image-size`).
        model_size: the model's, or None where the model does not say.
        where: what gave the model's size, for the message.
    """
    if model_size is None or image_size == model_size:
        return None
    return (
        f"the image size {image_size} (--image-size) is not the model's resolution: {where} takes "
        f"{model_size} x {model_size} images. Leave --image-size out, and the client takes the "
        f"model's, or pass {model_size}."
    )


def print_top_classes(paths, probabilities, classnames, k=5):
    """One line per image: its path and its `k` most probable classes."""
    for path, row in zip(paths, probabilities):
        best = np.argsort(-np.asarray(row))[:k]
        print(path, ", ".join(f"{classnames[i]} {row[i]:.3f}" for i in best))


def client_parser(description):
    """The arguments every client takes: --images, --classnames, --image-size, --prompt."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--classnames", nargs="+", required=True)
    parser.add_argument(
        "--image-size", type=int, help="the model's resolution (default: what the model declares)"
    )
    parser.add_argument("--prompt", default="{}.", help="zero-shot exports: their template")
    return parser


def fail(parser, error):
    """Ends the command with one line naming the problem (no traceback); exit status 2."""
    print(f"{parser.prog}: error: {error}", file=sys.stderr)
    return 2


def run_client(predict, default_server, argv=None, model_image_size=None, errors=()):
    """The command line the TF Serving clients share: classify images, print the top 5.

    Args:
        predict: `predict(server, model_name, inputs) -> {output name: array}`.
        default_server: the server address used when `--server` is not given.
        argv: command-line arguments (default: `sys.argv`).
        model_image_size: optional `model_image_size(server, model_name)`: the
            resolution the served model declares, or None.
        errors: exception types whose message the command prints as its error.

    Returns:
        The exit status: 0, or 2 after a one-line error.
    """
    parser = client_parser("Classify images with a served model.")
    parser.add_argument("--server", default=default_server)
    parser.add_argument("--model", default="cocoop", help="model name in models.config")
    args = parser.parse_args(argv)
    try:
        served = model_image_size(args.server, args.model) if model_image_size else None
        size = args.image_size or served
        if size is None:
            raise ValueError("the server does not say the model's resolution: pass --image-size.")
        problem = size_problem(size, served, f"the model {args.model!r} on {args.server}")
        if problem:
            raise ValueError(problem)
        outputs = predict(
            args.server,
            args.model,
            {"images": load_images(args.images, size), "token_ids": tokenize_classnames(args.classnames, args.prompt)},
        )
    except (ValueError, RuntimeError, ImportError, OSError, *errors) as error:
        return fail(parser, getattr(error, "details", lambda: None)() or error)
    print_top_classes(args.images, outputs["probabilities"], args.classnames)
    return 0
