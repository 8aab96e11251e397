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


def _add_export(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="export a trained model for TF Serving or TFLite",
        description="Writes a SavedModel in TF Serving's layout (OUTPUT/VERSION/) or a "
        ".tflite file. Both take images and tokenised class names, so the served "
        "model answers for any class set; see export/README.md for the contract.",
    )
    parser.add_argument(
        "--model", required=True,
        help="a .keras file (model.save) or a .safetensors prompt checkpoint "
        "(model.save_prompt, with --backbone)",
    )
    parser.add_argument("--format", required=True, choices=["saved_model", "tflite"])
    parser.add_argument(
        "--output", required=True,
        help="saved_model: the model's base folder (TF Serving's base_path); "
        "tflite: the .tflite file",
    )
    parser.add_argument("--version", type=int, default=1, help="saved_model version folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument(
        "--quantize", choices=["dynamic", "float16"],
        help="tflite only: dynamic-range (int8 weights) or float16 weights",
    )
    parser.add_argument(
        "--backbone", help="prompt checkpoints: the CLIP source it was trained on (see zeroshot)"
    )
    parser.add_argument(
        "--method", choices=["cocoop", "coop"],
        help="prompt checkpoints: the method (default: the one recorded in the file)",
    )
    parser.set_defaults(run=run_export)


def run_export(args):
    from cocoop_tf.export import export_saved_model
    from cocoop_tf.export import export_tflite
    from cocoop_tf.export import load_model
    from cocoop_tf.export import model_info

    if args.quantize and args.format != "tflite":
        raise ValueError("--quantize applies to --format tflite only.")
    model = load_model(args.model, backbone=args.backbone, method=args.method)
    if args.format == "saved_model":
        path = export_saved_model(model, args.output, args.version, overwrite=args.overwrite)
    else:
        path = export_tflite(model, args.output, quantize=args.quantize)
    info = model_info(model)
    size = info["image_size"]
    print(f"Exported {info['method']} to {path}")
    print(f"  inputs:  images float32 [B, {size}, {size}, 3] (RGB 0..255), token_ids int32 [C, L]")
    print(f"  token_ids rows: tokens of {info['prompt']!r} per class name, [{info['start_token_id']}] "
          f"... [{info['end_token_id']}] 0..., L <= {info['context_length']}")
    print("  outputs: logits, probabilities [B, C]")
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
    _add_export(subparsers)
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
