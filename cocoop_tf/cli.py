"""The `cocoop-tf` command line."""

import argparse
import errno
import os
import signal
import sys
import threading
import warnings

import tensorflow as tf  # started quietly by cocoop_tf/__init__.py

from cocoop_tf.models import method_names
from cocoop_tf.protocols.protocol import get_protocol


def _add_zeroshot(subparsers):
    parser = subparsers.add_parser(
        "zeroshot",
        help="classify images with zero-shot CLIP",
        description="Zero-shot CLIP: ranks the class names for each image.",
    )
    parser.add_argument(
        "--backbone", required=True,
        help="CLIP source: keras-hub preset name (e.g. clip_vit_base_patch16) or folder, "
        "Hugging Face CLIPModel folder, OpenAI .pt/.safetensors file, mini_clip (the "
        "demo's small CLIP, bundled: it knows only the demo's words), or random_tiny / "
        "random_vit_b16 (random weights, for tests)",
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
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing version or .tflite file"
    )
    parser.add_argument(
        "--quantize", choices=["dynamic", "float16"],
        help="tflite only: dynamic-range (int8 weights) or float16 weights",
    )
    parser.add_argument(
        "--backbone", help="prompt checkpoints: the CLIP source it was trained on (see zeroshot)"
    )
    parser.add_argument(
        "--method", choices=method_names(learns=True),
        help="prompt checkpoints: the method (default: the one recorded in the file)",
    )
    parser.add_argument(
        "--force", action="store_true",
        help="prompt checkpoints: load one trained on a backbone with other weights",
    )
    parser.set_defaults(run=run_export)


def run_export(args):
    from cocoop_tf.export import export_saved_model
    from cocoop_tf.export import export_tflite
    from cocoop_tf.export import load_model
    from cocoop_tf.export import model_info

    if args.quantize and args.format != "tflite":
        raise ValueError("--quantize applies to --format tflite only.")
    model = load_model(args.model, backbone=args.backbone, method=args.method, force=args.force)
    try:
        if args.format == "saved_model":
            path = export_saved_model(model, args.output, args.version, overwrite=args.overwrite)
        else:
            path = export_tflite(model, args.output, quantize=args.quantize, overwrite=args.overwrite)
    except FileExistsError as error:
        raise FileExistsError(str(error).replace("overwrite=True", "--overwrite")) from None
    info = model_info(model)
    size = info["image_size"]
    print(f"Exported {info['method']} to {path}")
    print(f"  inputs:  images float32 [B, {size}, {size}, 3] (RGB 0..255), token_ids int32 [C, L]")
    print(f"  token_ids rows: tokens of {info['prompt']!r} per class name, [{info['start_token_id']}] "
          f"... [{info['end_token_id']}] 0..., L <= {info['context_length']}")
    print("  outputs: logits, probabilities [B, C]")
    return 0


# --- protocols -------------------------------------------------------------------


def _add_run_options(parser, protocol, training=True):
    """Flags shared by the protocol commands; every default is the paper's (RunConfig)."""
    parser.add_argument("--output", required=True, help="folder for checkpoints, logs and results")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output")
    parser.add_argument("--config", help="JSON or YAML file of settings (flags override it)")
    parser.add_argument("--backbone", help="CLIP source (see zeroshot --help)")
    parser.add_argument("--data-root", help="folder holding the datasets (CoOp's $DATA)")
    methods_default = get_protocol(protocol).default_methods()
    if training:
        parser.add_argument(
            "--methods", nargs="+", choices=method_names(),
            help=f"methods to run (default: {' '.join(methods_default)})",
        )
        _add_training_options(parser)
    parser.add_argument(
        "--eval-batch-size", type=int, help="evaluation batch size on each replica (default: 100)"
    )
    parser.add_argument(
        "--eval-shard-size", type=int,
        help="images per evaluation shard, the unit dealt to replicas and kept for --resume (default: 1000)",
    )
    parser.add_argument("--templates", nargs="+", help="zero-shot templates (default: the dataset's)")
    parser.add_argument("--image-size", type=int, help="input side (default: the backbone's)")
    parser.add_argument(
        "--skip-corrupt", action="store_true", default=None,
        help="leave unreadable images out, naming each (default: stop before the run starts)",
    )
    parser.add_argument(
        "--precision", choices=["float32", "mixed_float16", "mixed_bfloat16"],
        help="compute precision (default: float32)",
    )
    parser.add_argument(
        "--strategy", choices=["mirrored", "multi_worker", "tpu"],
        help="tf.distribute strategy; the global batch is split across replicas",
    )
    parser.add_argument("--tpu", help="TPU name or address for --strategy tpu")
    parser.add_argument(
        "--deterministic", action="store_true", default=None, help="deterministic TF ops"
    )
    xla = parser.add_mutually_exclusive_group()
    xla.add_argument(
        "--jit-compile", action="store_true", default=None,
        help="compile the training and evaluation steps of the methods trained here with XLA "
             "(default: for text towers at least 512 wide, as CLIP's)",
    )
    xla.add_argument(
        "--no-jit-compile", dest="jit_compile", action="store_false", default=None,
        help="train (and evaluate what is trained here) without XLA",
    )
    parser.set_defaults(methods_default=methods_default)


def _paper_defaults(setting):
    from cocoop_tf.protocols.config import method_settings

    values = {m: method_settings({}, m)[setting] for m in method_names(learns=True)}
    return ", ".join(f"{value} for {m}" for m, value in values.items())


def _add_training_options(parser):
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: 1 2 3)")
    parser.add_argument("--shots", type=int, help="training images per class (default: 16)")
    parser.add_argument(
        "--epochs", type=int, help=f"training epochs (default: each method's paper's: {_paper_defaults('epochs')})"
    )
    parser.add_argument(
        "--batch-size", type=int,
        help=f"global training batch size (default: each method's paper's: {_paper_defaults('batch_size')})",
    )
    parser.add_argument(
        "--lr", type=float, help=f"peak learning rate (default: each method's paper's: {_paper_defaults('lr')})"
    )
    parser.add_argument("--momentum", type=float, help="SGD momentum (default: 0.9)")
    parser.add_argument("--weight-decay", type=float, help="L2 coefficient (default: 5e-4)")
    parser.add_argument(
        "--warmup-epochs", type=int,
        help="constant warm-up epochs (default: 1; 0 for no warm-up, e.g. with --epochs 1)",
    )
    parser.add_argument("--warmup-lr", type=float, help="warm-up learning rate (default: 1e-5)")
    parser.add_argument(
        "--n-ctx", type=int,
        help="context vectors (default: ctx-init's words, 4; 2 for maple, whose other words stay text; "
        "4 for ivlp and promptsrc)",
    )
    parser.add_argument(
        "--ctx-init", help='initial context words (default: "a photo of a"; "none": random)'
    )
    parser.add_argument("--reduction", type=int, help="CoCoOp Meta-Net reduction (default: 16)")
    parser.add_argument(
        "--prompt-depth", type=int,
        help="MaPLe's J: blocks of each tower that take prompts; IVLP's and PromptSRC's text depth (default: 9)",
    )
    parser.add_argument(
        "--n-ctx-vision", type=int, help="IVLP's and PromptSRC's vision prompt vectors (default: 4)"
    )
    parser.add_argument(
        "--vision-prompt-depth", type=int,
        help="IVLP's and PromptSRC's vision blocks that take prompts, 0 for none (default: --prompt-depth)",
    )
    parser.add_argument(
        "--kg-weight", type=float, help="KgCoOp's weight of the knowledge-guided term (default: 8.0)"
    )
    parser.add_argument(
        "--text-loss-weight", type=float,
        help="PromptSRC's weight of the L1 distance to frozen CLIP's text features (default: 25.0)",
    )
    parser.add_argument(
        "--image-loss-weight", type=float,
        help="PromptSRC's weight of the L1 distance to frozen CLIP's image features (default: 10.0)",
    )
    parser.add_argument(
        "--gpa-mean", type=float,
        help="PromptSRC's Gaussian prompt aggregation: mean epoch of the weights (default: 15.0)",
    )
    parser.add_argument(
        "--gpa-std", type=float,
        help="PromptSRC's Gaussian prompt aggregation: std in epochs, > 0 (default: 1.0)",
    )
    parser.add_argument(
        "--class-specific", action="store_true", default=None,
        help="CoOp with one context per class (train/evaluate on the same classes only)",
    )
    parser.add_argument(
        "--crop-scale", nargs=2, type=float, metavar=("LOW", "HIGH"),
        help="area range of the training crop (default: 0.08 1.0, the paper's)",
    )
    parser.add_argument(
        "--no-flip", dest="flip", action="store_false", default=None,
        help="no random horizontal flip in training (for digits, text, ...)",
    )


_PROTOCOL_FLAGS = {"output", "resume", "config", "command", "run", "methods_default",
                   "dataset", "source", "targets", "subset", "prompts", "default_targets", "force"}


def _config(args, extra_keys=()):
    from cocoop_tf.protocols import make_config
    from cocoop_tf.protocols import read_config_file

    file_values = read_config_file(args.config) if args.config else {}
    overrides = {k: v for k, v in vars(args).items() if k not in _PROTOCOL_FLAGS}
    if getattr(args, "methods_default", None) and "methods" not in file_values:
        overrides["methods"] = overrides.get("methods") or args.methods_default
    config, extra = make_config(file_values, overrides, known_extra=extra_keys)
    for key in extra_keys:
        if getattr(args, key, None) is not None:
            extra[key] = getattr(args, key)
    return config, extra


def _required(extra, key, flag):
    if extra.get(key) is None:
        raise ValueError(f"Give {flag} (or '{key}' in the config file).")
    return extra[key]


def _add_base2new(subparsers):
    parser = subparsers.add_parser(
        "base2new",
        help="base-to-new generalisation (the paper's Table 1)",
        description="Trains on the first half of the classes (16 shots per class by "
        "default) and evaluates on the base and the new classes' test images; "
        "reports Base, New and H per method, averaged over seeds.",
    )
    parser.add_argument("--dataset", help="dataset name, tfds:<builder>, or image folder")
    _add_run_options(parser, "base2new")
    parser.set_defaults(run=run_base2new)


def run_base2new(args):
    from cocoop_tf.protocols import run_protocol

    config, extra = _config(args, ("dataset",))
    dataset = _required(extra, "dataset", "--dataset")
    run_protocol(
        "base2new", config, args.output, source=dataset, subset="base",
        evaluations=[(dataset, "base"), (dataset, "new")], resume=args.resume,
    )
    return 0


def _add_transfer(subparsers, protocol, help):
    default_targets = list(get_protocol(protocol).default_targets)
    parser = subparsers.add_parser(
        protocol, help=help,
        description=f"{help[0].upper()}{help[1:]}: trains on all classes of the source "
        "dataset and evaluates on its test split and on each target dataset.",
    )
    parser.add_argument(
        "--source", help=f"training dataset (default: {get_protocol(protocol).default_source})"
    )
    parser.add_argument(
        "--targets", nargs="+", help=f"evaluation datasets (default: {' '.join(default_targets)})"
    )
    _add_run_options(parser, protocol)
    parser.set_defaults(run=run_transfer, default_targets=default_targets)


def run_transfer(args):
    from cocoop_tf.protocols import run_protocol

    config, extra = _config(args, ("source", "targets"))
    source = extra.get("source") or get_protocol(args.command).default_source
    targets = extra.get("targets") or args.default_targets
    run_protocol(
        args.command, config, args.output, source=source, subset="all",
        evaluations=[(source, "all")] + [(target, "all") for target in targets],
        resume=args.resume,
    )
    return 0


def _add_train(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train prompt learners (default CoCoOp) on a dataset and test on its classes",
        description="Trains on the few-shot training split (all or base classes), writes "
        "the prompt checkpoint runs/<method>_seed<seed>/prompt.safetensors, and reports "
        "test accuracy on the same classes.",
    )
    parser.add_argument("--dataset", help="dataset name, tfds:<builder>, or image folder")
    parser.add_argument("--subset", choices=["all", "base"], help="classes to train on (default: all)")
    _add_run_options(parser, "train")
    parser.set_defaults(run=run_train)


def run_train(args):
    from cocoop_tf.protocols import run_protocol

    config, extra = _config(args, ("dataset", "subset"))
    dataset = _required(extra, "dataset", "--dataset")
    subset = extra.get("subset") or "all"
    run_protocol(
        "train", config, args.output, source=dataset, subset=subset,
        evaluations=[(dataset, subset)], resume=args.resume,
    )
    return 0


def _add_evaluate(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="test prompt checkpoints (or zero-shot CLIP) on a dataset",
        description="Evaluates prompt checkpoints written by train/base2new (--prompts), or "
        "zero-shot CLIP without them, on the test split of a dataset's classes. A prompt "
        "brings the settings it was trained with; results.md states them.",
    )
    parser.add_argument("--dataset", help="dataset name, tfds:<builder>, or image folder")
    parser.add_argument("--subset", choices=["all", "base", "new"], help="classes (default: all)")
    parser.add_argument("--prompts", nargs="+", help="prompt checkpoints (.safetensors)")
    parser.add_argument(
        "--force", action="store_true",
        help="evaluate prompts trained on a backbone with other weights (refused by default)",
    )
    _add_run_options(parser, "evaluate", training=False)
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args):
    from cocoop_tf.protocols import run_protocol

    config, extra = _config(args, ("dataset", "subset"))
    config.methods = args.methods_default  # without --prompts, evaluate is zero-shot CLIP
    dataset = _required(extra, "dataset", "--dataset")
    run_protocol(
        "evaluate", config, args.output, evaluations=[(dataset, extra.get("subset") or "all")],
        prompts=args.prompts or (), resume=args.resume, force=args.force,
    )
    return 0


def _add_demo(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="offline demo: CLIP, CoOp and CoCoOp base-to-new on a mini benchmark, then export",
        description="Runs zero-shot CLIP, CoOp and CoCoOp base-to-new (3 seeds) on a "
        "20-class mini benchmark with a small CLIP pretrained by this project, prints the "
        "Base / New / H table, writes the plot, and exports CoCoOp as a SavedModel and a "
        "TFLite file that classify a new-class image. Offline; a few minutes on 2 CPU cores.",
    )
    parser.add_argument("--output", default="cocoop_demo", help="output folder (default: cocoop_demo)")
    parser.add_argument("--data-root", help="where the mini benchmark's images are written")
    parser.set_defaults(run=run_demo)


def run_demo(args):
    from cocoop_tf.demo.demo import run_demo as demo

    demo(args.output, args.data_root)
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
    _add_demo(subparsers)
    _add_zeroshot(subparsers)
    _add_export(subparsers)
    _add_base2new(subparsers)
    _add_transfer(subparsers, "cross-dataset", "cross-dataset transfer (Table 2)")
    _add_transfer(subparsers, "domain-generalization", "domain generalisation (Table 3)")
    _add_train(subparsers)
    _add_evaluate(subparsers)
    return parser


def _one_line_warnings(command):
    """Warnings as one line each, `cocoop-tf COMMAND: warning: ...`, without source lines."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"cocoop-tf {command}: warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, `kill`, a container stopping), raised as Ctrl-C is."""


def _terminate(signum, frame):
    raise _Terminated()


def main(argv=None):
    args = build_parser().parse_args(argv)
    _one_line_warnings(args.command)
    # SIGTERM stops the command as Ctrl-C does: files being written are removed (no staging
    # file is left beside its destination) and the user is told how to continue.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return args.run(args)
    except KeyboardInterrupt as interrupt:
        if getattr(args, "output", None) and hasattr(args, "resume"):
            print("\nInterrupted; continue with the same command and --resume.", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(interrupt, _Terminated) else signal.SIGINT)
    except (ValueError, OSError, RuntimeError, ImportError, ArithmeticError, tf.errors.OpError) as error:
        # Our errors say what is wrong and how to fix it; a traceback adds nothing.
        print(f"cocoop-tf {args.command}: error: {_one_line(error, args)}", file=sys.stderr)
        return 2
    except Exception as error:
        if os.environ.get("COCOOP_TF_DEBUG"):
            raise
        print(
            f"cocoop-tf {args.command}: error: {type(error).__name__}: {_one_line(error, args)} "
            "(unexpected: please report it; COCOOP_TF_DEBUG=1 shows where it happened)",
            file=sys.stderr,
        )
        return 2
    finally:
        if in_main_thread:  # None: a handler not set from Python, i.e. the default
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _one_line(error, args):
    """The error as one line, with the fix for a full disk."""
    text = error.message if isinstance(error, tf.errors.OpError) else str(error)
    full = (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        "No space left on device" in text
    )
    if full:
        where = getattr(error, "filename", None) or getattr(args, "output", None)
        again = " and run the same command with --resume" if hasattr(args, "resume") else ""
        text = (
            f"No space left on the device{f' writing {where}' if where else ''}. Free some "
            f"space (or choose another --output){again}."
        )
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
