"""What a client sends to an exported model, prepared without TensorFlow.

`token_ids`: the class names, tokenised with CLIP's BPE on the client (the
served graphs contain no tokenizer). `images`: RGB pixel values 0..255 at the
model's resolution, prepared as CLIP evaluates (short side resized with
bicubic interpolation, centre crop).

Needs `numpy`, `instant-clip-tokenizer` (tokens) and `pillow` (images).
"""

import numpy as np

START_TOKEN_ID = 49406
END_TOKEN_ID = 49407


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
    from instant_clip_tokenizer import Tokenizer

    texts = [prompt.format(name.replace("_", " ").strip()) for name in classnames]
    token_ids = Tokenizer().tokenize_batch(texts, context_length).astype(np.int32)
    # The tokenizer cuts long texts; the served graph rejects a cut name.
    return token_ids


def load_images(paths, size):
    """Reads image files as float32 `[N, size, size, 3]`, RGB pixel values 0..255.

    CLIP's test transform: the short side is resized to `size` (bicubic),
    then the centre `size x size` square is cropped.

    Args:
        paths: image file paths.
        size: the model's resolution (224 for ViT-B/16).
    """
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
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


def run_client(predict, default_server, argv=None):
    """The command line both example clients share: classify images, print the top 5.

    Args:
        predict: `predict(server, model_name, inputs) -> {output name: array}`.
        default_server: the server address used when `--server` is not given.
        argv: command-line arguments (default: `sys.argv`).
    """
    import argparse

    parser = argparse.ArgumentParser(description="Classify images with a served model.")
    parser.add_argument("--server", default=default_server)
    parser.add_argument("--model", default="cocoop", help="model name in models.config")
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--classnames", nargs="+", required=True)
    parser.add_argument("--image-size", type=int, default=224, help="the model's resolution")
    parser.add_argument("--prompt", default="{}.", help="zero-shot exports: their template")
    args = parser.parse_args(argv)
    outputs = predict(
        args.server,
        args.model,
        {
            "images": load_images(args.images, args.image_size),
            "token_ids": tokenize_classnames(args.classnames, args.prompt),
        },
    )
    for path, probabilities in zip(args.images, outputs["probabilities"]):
        best = np.argsort(-probabilities)[:5]
        print(path, ", ".join(f"{args.classnames[i]} {probabilities[i]:.3f}" for i in best))
