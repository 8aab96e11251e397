"""The `cocoop-tf` command line.

Arguments are parsed, and help and argument errors printed, before
TensorFlow is imported: the names the parsers show and check come from
`cocoop_tf.catalog`, and each command imports what it runs.
"""

import argparse
import difflib
import errno
import os
import signal
import sys
import textwrap
import threading
import warnings

from cocoop_tf import __version__
from cocoop_tf import catalog
from cocoop_tf.data.benchmarks import find_benchmark
from cocoop_tf.native_stderr import import_tensorflow


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviated flags, whose errors are one line ending with where help is."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help)\n")


def _unknown(kind, value, names):
    """`unknown method 'cocop'; did you mean cocoop?`, or the names when none is close."""
    close = difflib.get_close_matches(value.lower(), names, n=1)
    if close:
        return f"unknown {kind} {value!r}; did you mean {close[0]}?"
    return f"unknown {kind} {value!r}; choose from {', '.join(names)}"


def _one_of(kind, names):
    """An argparse `type`: one of `names`, or an error that suggests the nearest."""

    def check(value):
        if value not in names:
            raise argparse.ArgumentTypeError(_unknown(kind, value, names))
        return value

    check.__name__ = kind  # argparse names the type in its own messages
    return check


def _choices(kind, names):
    """`add_argument` keywords for one of a few `names`, shown as {a,b} in the usage."""
    return {"type": _one_of(kind, names), "metavar": "{" + ",".join(names) + "}"}


def _listed(names):
    return ", ".join(names)


def _backbone_help():
    """What --backbone takes, with the names `load_clip` knows."""
    by_description = {}
    for name, description in catalog.named_backbones().items():
        by_description.setdefault(description, []).append(name)
    named = [f"{' / '.join(names)} ({description})" for description, names in by_description.items()]
    return (
        "CLIP source: keras-hub preset name (e.g. clip_vit_base_patch16) or folder, Hugging Face "
        f"CLIPModel folder, OpenAI .pt/.safetensors file, or a name: {_listed(named)}"
    )


def _dataset_help(what="dataset"):
    return f"{what}: {_listed(catalog.dataset_names())}, tfds:<builder>, or image folder"


def _add_zeroshot(subparsers):
    parser = subparsers.add_parser(
        "zeroshot",
        help="classify images with zero-shot CLIP",
        description="Zero-shot CLIP: ranks the class names for each image.",
    )
    parser.add_argument("--backbone", required=True, help=_backbone_help())
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
    parser.add_argument("--format", required=True, **_choices("format", ["saved_model", "tflite"]))
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
        "--quantize", **_choices("quantization", ["dynamic", "float16"]),
        help="tflite only: dynamic-range (int8 weights) or float16 weights",
    )
    parser.add_argument(
        "--backbone", help="prompt checkpoints: the CLIP source it was trained on (see zeroshot)"
    )
    parser.add_argument(
        "--method", type=_one_of("method", catalog.method_names(learns=True)), metavar="METHOD",
        help=f"prompt checkpoints: the method, {_listed(catalog.method_names(learns=True))} "
        "(default: the one recorded in the file)",
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
    if training:
        parser.add_argument(
            "--methods", nargs="+", type=_one_of("method", catalog.method_names()), metavar="METHOD",
            help=f"methods to run: {_listed(catalog.method_names())} "
            f"(default: {' '.join(catalog.PROTOCOLS[protocol].default_methods)})",
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
        "--precision", **_choices("precision", ["float32", "mixed_float16", "mixed_bfloat16"]),
        help="compute precision (default: float32)",
    )
    parser.add_argument(
        "--strategy", **_choices("strategy", ["mirrored", "multi_worker", "tpu"]),
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


def _paper_defaults(setting):
    return ", ".join(f"{getattr(m, setting)} for {m.name}" for m in catalog.METHODS if m.learns)


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
        "--keep-checkpoints", **_choices("keep-checkpoints", ["last", "all"]),
        help="epoch checkpoints kept: the newest two, what --resume needs, or all (default: last)",
    )
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


_PROTOCOL_FLAGS = {"output", "resume", "config", "command", "run",
                   "dataset", "source", "targets", "subset", "prompts", "force"}


def _config(args, extra_keys=()):
    from cocoop_tf.protocols import make_config
    from cocoop_tf.protocols import read_config_file
    from cocoop_tf.protocols.protocol import get_protocol

    file_values = read_config_file(args.config) if args.config else {}
    overrides = {k: v for k, v in vars(args).items() if k not in _PROTOCOL_FLAGS}
    if "methods" not in file_values:
        overrides["methods"] = overrides.get("methods") or get_protocol(args.command).default_methods()
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
    parser.add_argument("--dataset", help=_dataset_help())
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
    defaults = catalog.PROTOCOLS[protocol]
    parser = subparsers.add_parser(
        protocol, help=help,
        description=f"{help[0].upper()}{help[1:]}: trains on all classes of the source "
        "dataset and evaluates on its test split and on each target dataset.",
    )
    parser.add_argument(
        "--source", help=f"{_dataset_help('training dataset')} (default: {defaults.default_source})"
    )
    parser.add_argument(
        "--targets", nargs="+",
        help=f"evaluation datasets, as --source (default: {' '.join(defaults.default_targets)})",
    )
    _add_run_options(parser, protocol)
    parser.set_defaults(run=run_transfer)


def run_transfer(args):
    from cocoop_tf.protocols import run_protocol
    from cocoop_tf.protocols.protocol import get_protocol

    config, extra = _config(args, ("source", "targets"))
    protocol = get_protocol(args.command)
    source = extra.get("source") or protocol.default_source
    targets = extra.get("targets") or protocol.default_targets
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
    parser.add_argument("--dataset", help=_dataset_help())
    parser.add_argument("--subset", **_choices("subset", ["all", "base"]), help="classes to train on (default: all)")
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
    parser.add_argument("--dataset", help=_dataset_help())
    parser.add_argument("--subset", **_choices("subset", ["all", "base", "new"]), help="classes (default: all)")
    parser.add_argument("--prompts", nargs="+", help="prompt checkpoints (.safetensors)")
    parser.add_argument(
        "--force", action="store_true",
        help="evaluate prompts trained on a backbone with other weights (refused by default)",
    )
    _add_run_options(parser, "evaluate", training=False)
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args):
    from cocoop_tf.protocols import run_protocol
    from cocoop_tf.protocols.protocol import get_protocol

    config, extra = _config(args, ("dataset", "subset"))
    config.methods = get_protocol("evaluate").default_methods()  # without --prompts, evaluate is zero-shot CLIP
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


def _names_epilog():
    """The top-level help's closing lines: the methods, datasets and backbones by name."""
    by_default = " ".join(m.name for m in catalog.METHODS if m.runs_by_default)
    paragraphs = [
        f"methods (--methods): {' '.join(catalog.method_names())} ({by_default} run by default)",
        f"datasets (--dataset, --source, --targets): {' '.join(catalog.dataset_names())}; "
        "or tfds:<builder>, or a folder with one subfolder of images per class",
        "backbones (--backbone): a keras-hub CLIP preset (e.g. clip_vit_base_patch16) or folder, "
        "a Hugging Face CLIPModel folder, an OpenAI .pt/.safetensors file, or "
        f"{' '.join(catalog.named_backbones())}",
        "Each command's --help says what it takes, e.g. cocoop-tf base2new --help.",
    ]
    return "\n".join(textwrap.fill(p, 88, subsequent_indent="  ") for p in paragraphs)


def build_parser():
    """The parser of every command; its `commands` maps each command to its parser."""
    display_names = [m.display_name for m in catalog.METHODS]
    parser = _Parser(
        prog="cocoop-tf",
        description=f"Prompt learning for CLIP in Keras: {', '.join(display_names[:-1])} and "
        f"{display_names[-1]}, with the CoCoOp paper's protocols.",
        epilog=_names_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="show the version and exit"
    )
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    _add_demo(subparsers)
    _add_zeroshot(subparsers)
    _add_export(subparsers)
    _add_base2new(subparsers)
    _add_transfer(subparsers, "cross-dataset", "cross-dataset transfer (Table 2)")
    _add_transfer(subparsers, "domain-generalization", "domain generalisation (Table 3)")
    _add_train(subparsers)
    _add_evaluate(subparsers)
    parser.commands = subparsers.choices
    return parser


def _flags(parser):
    """The parser's flags (argparse keeps its actions in `_actions`, unexported but long stable)."""
    return [flag for action in parser._actions for flag in action.option_strings]


def _unrecognized(arguments, parser):
    """`unrecognized argument --bakcbone; did you mean --backbone?`, for `parser`'s flags."""
    # After an unknown flag, what follows is taken for its value.
    named = [argument for argument in arguments if argument.startswith("-")] or arguments
    flags = [flag for flag in _flags(parser) if flag.startswith("--")]
    clauses = []
    for argument in named:
        given = argument.split("=", 1)[0]
        if not given.startswith("-"):  # a stray value, or a flag without its dashes
            close = [flag for flag in flags if flag == f"--{given}"]
        else:
            starting = [flag for flag in flags if flag.startswith(given)]
            close = starting if len(starting) == 1 else difflib.get_close_matches(given, flags, n=1)
        clauses.append((given, close[0] if close else None))
    if len(clauses) == 1:
        given, close = clauses[0]
        return f"unrecognized argument {given}" + (f"; did you mean {close}?" if close else "")
    return "unrecognized arguments " + ", ".join(
        given + (f" (did you mean {close}?)" if close else "") for given, close in clauses
    )


def _mistyped_dataset(value, args):
    """Whether `value` can only be a misspelt dataset name: a near name, not tfds:, not a folder."""
    if (
        value.startswith("tfds:") or os.sep in value or "/" in value or value.startswith((".", "~"))
        or find_benchmark(value) is not None or value in catalog.dataset_names()
        or args.config  # a config file may name the data root that holds a folder of this name
    ):
        return False
    roots = ["."] + ([args.data_root] if args.data_root else [])
    if any(os.path.isdir(os.path.join(root, value)) for root in roots):
        return False
    return bool(difflib.get_close_matches(value.lower(), catalog.dataset_names(), n=1))


def _unknown_flags(arguments, parser):
    """The arguments that look like flags (`--name`, `--name=value`) and are not `parser`'s."""
    flags = _flags(parser)
    return [a for a in arguments if a.startswith("--") and a != "--" and a.split("=", 1)[0] not in flags]


def parse_arguments(argv=None):
    """The parsed command line; help, --version and argument errors exit here, before TensorFlow.

    A mistyped flag is named before a missing one, so the error points at the typo.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(argument) for argument in argv]
    # The top level takes only flags without values, so the first other argument is the command.
    at = next((i for i, argument in enumerate(argv) if not argument.startswith("-")), len(argv))
    command = parser.commands.get(argv[at]) if at < len(argv) else None
    if at < len(argv) and command is None:
        parser.error(_unknown("command", argv[at], list(parser.commands)))
    for where, arguments in ((parser, argv[:at]), (command, argv[at + 1:])):
        unknown = _unknown_flags(arguments, where) if where else []
        if unknown:
            where.error(_unrecognized(unknown, where))
    args, unknown = parser.parse_known_args(argv)
    subparser = parser.commands[args.command]
    if unknown:
        subparser.error(_unrecognized(unknown, subparser))
    for flag in ("--dataset", "--source", "--targets"):
        values = getattr(args, flag[2:], None)
        for value in [values] if isinstance(values, str) else values or []:
            if _mistyped_dataset(value, args):
                subparser.error(f"argument {flag}: {_unknown('dataset', value, catalog.dataset_names())}")
    return args


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
    args = parse_arguments(argv)
    _one_line_warnings(args.command)
    # SIGTERM stops the command as Ctrl-C does: files being written are removed (no staging
    # file is left beside its destination) and the user is told how to continue.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        import_tensorflow()  # every command runs TensorFlow; it starts here, quietly
        return args.run(args)
    except KeyboardInterrupt as interrupt:
        if getattr(args, "output", None) and hasattr(args, "resume"):
            print("\nInterrupted; continue with the same command and --resume.", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(interrupt, _Terminated) else signal.SIGINT)
    except (ValueError, OSError, RuntimeError, ImportError, ArithmeticError, _op_error()) as error:
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


def _op_error():
    """TensorFlow's `OpError`: its message says what failed in the graph."""
    import tensorflow as tf

    return tf.errors.OpError


def _one_line(error, args):
    """The error as one line, with the fix for a full disk."""
    text = error.message if isinstance(error, _op_error()) else str(error)
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
