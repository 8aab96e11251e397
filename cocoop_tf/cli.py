"""The `cocoop-tf` command line."""

import argparse
import os
import sys


def _add_zeroshot(subparsers):
    parser = subparsers.add_parser(
        "zeroshot",
        help="classify images with zero-shot CLIP",
        description="Zero-shot CLIP: ranks the class names for each image.",
    )
    parser.add_argument(
        "--backbone", required=True,
        help="CLIP source: keras-hub preset name or folder, Hugging Face "
        "CLIPModel folder, OpenAI .pt/.safetensors file, or random_tiny",
    )
    names = parser.add_mutually_exclusive_group(required=True)
    names.add_argument("--classnames", nargs="+", help="class names")
    names.add_argument("--classnames-file", help="text file, one class name per line")
    parser.add_argument("--images", nargs="+", required=True, help="image files")
    parser.add_argument(
        "--template", nargs="+", default=["a photo of a {}."],
        help="prompt template(s) with {} for the class name; several are ensembled",
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.set_defaults(run=run_zeroshot)


def run_zeroshot(args):
    import numpy as np
    import tensorflow as tf

    from cocoop_tf.clip import load_clip
    from cocoop_tf.data.transforms import load_image
    from cocoop_tf.data.transforms import resize_and_center_crop
    from cocoop_tf.models import ZeroShotCLIP

    classnames = args.classnames or _read_lines(args.classnames_file)
    clip = load_clip(args.backbone)
    model = ZeroShotCLIP(clip, classnames, template=args.template)
    size = clip.vision_encoder.image_shape[0]
    images = [resize_and_center_crop(load_image(path), size) for path in args.images]
    logits = np.concatenate(
        [
            np.asarray(model(tf.stack(images[i : i + args.batch_size])))
            for i in range(0, len(images), args.batch_size)
        ]
    )
    probabilities = np.asarray(tf.nn.softmax(logits))
    top_k = min(args.top_k, len(model.classnames))
    width = max(len("class"), *(len(n) for n in model.classnames))
    for path, row_logits, row_probs in zip(args.images, logits, probabilities):
        print(path)
        print(f"  {'rank':>4}  {'class':<{width}}  {'probability':>11}  {'logit':>8}")
        for rank, index in enumerate(np.argsort(-row_logits)[:top_k], start=1):
            print(
                f"  {rank:>4}  {model.classnames[index]:<{width}}  "
                f"{row_probs[index]:>11.4f}  {row_logits[index]:>8.3f}"
            )
    return 0


def _read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="cocoop-tf",
        description="Conditional prompt learning (CoCoOp, CoOp) for CLIP in Keras.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_zeroshot(subparsers)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        # Our errors say what is wrong and how to fix it; a traceback adds nothing.
        print(f"cocoop-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
