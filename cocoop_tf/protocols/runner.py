"""The paper's protocols, end to end: data, training per method and seed, evaluation, results.

Every protocol is the same loop: for each method and seed, train on the
few-shot source view (CoOp, CoCoOp; zero-shot CLIP trains nothing and runs
once), then evaluate on a list of test sets, each with its own class names.

- base-to-new: train on the base classes, evaluate on base and new;
- cross-dataset: train on all source classes, evaluate on the source and
  other datasets;
- domain generalisation: the same, on domain-shifted versions of the source;
- train / evaluate: one of those steps alone.

The output folder holds everything (see `RunFolder`); an interrupted run
continues with `resume=True`.
"""

import json
import os
import time
import warnings

import keras

from cocoop_tf.clip import load_clip
from cocoop_tf.data import load_dataset
from cocoop_tf.data.benchmarks import find_benchmark
from cocoop_tf.data.checks import check_images
from cocoop_tf.files import write_text
from cocoop_tf.models.prompt_learning import read_prompt
from cocoop_tf.protocols.distribute import is_chief
from cocoop_tf.protocols.distribute import make_strategy
from cocoop_tf.protocols.distribute import set_seeds
from cocoop_tf.protocols.evaluation import accuracy
from cocoop_tf.protocols.evaluation import predict_split
from cocoop_tf.protocols.evaluation import save_predictions
from cocoop_tf.protocols.published import published_base_to_new
from cocoop_tf.protocols.published import published_transfer
from cocoop_tf.protocols.results import METHOD_NAMES
from cocoop_tf.protocols.results import RESULTS_FORMAT
from cocoop_tf.protocols.results import harmonic_mean
from cocoop_tf.protocols.results import summarize
from cocoop_tf.protocols.results import versions
from cocoop_tf.protocols.results import write_results
from cocoop_tf.protocols.run_folder import RunFolder
from cocoop_tf.protocols.run_folder import read_json
from cocoop_tf.protocols.training import build_model
from cocoop_tf.protocols.training import train_prompt_model

def _canonical(name):
    benchmark = find_benchmark(os.fspath(name))
    return benchmark.name if benchmark else os.path.basename(os.path.normpath(os.fspath(name)))


def run_protocol(
    protocol,
    config,
    output,
    *,
    source=None,
    subset="all",
    evaluations=(),
    prompts=(),
    resume=False,
    force=False,
    log=print,
):
    """Runs a protocol and writes its results; returns the results dict.

    Args:
        protocol: "base2new", "cross-dataset", "domain-generalization",
            "train" or "evaluate".
        config: a `RunConfig`.
        output: the output folder (see `RunFolder`).
        source: the training dataset (name or folder), for CoOp/CoCoOp.
        subset: the source classes trained on: "all" or "base".
        evaluations: list of `(dataset, subset)` test sets; in base-to-new
            `[(source, "base"), (source, "new")]`.
        prompts: prompt checkpoint files to evaluate instead of training
            (protocol "evaluate").
        resume: continue the run in `output`.
        force: evaluate prompts trained on another backbone (see
            `load_prompt`).
        log: function for progress lines.

    Returns:
        The dict written to `results.json` (see `cocoop_tf.protocols.results`).
    """
    started = time.time()
    datasets = {}

    def dataset(name):
        if name not in datasets:
            datasets[name] = load_dataset(name, config.data_root)
        return datasets[name]

    trains = any(m != "zeroshot" for m in config.methods) and not prompts
    if trains and source is None:
        raise ValueError("CoOp and CoCoOp need a training dataset (--dataset or --source).")
    if trains and config.class_specific and any(
        (_canonical(name), sub) != (_canonical(source), subset) for name, sub in evaluations
    ):
        raise ValueError(
            "Class-specific CoOp (class_specific) learns one context per training class and "
            "cannot be evaluated on other classes; turn it off for this protocol."
        )
    views = []
    for name, sub in evaluations:
        key = sub if protocol == "base2new" else _canonical(name)
        if any(key == k for k, _ in views):
            raise ValueError(f"{key!r} is evaluated twice; give each test set once.")
        views.append((key, dataset(name).subsample(sub)))
    source_data = dataset(source) if trains else None
    source_name = _canonical(source) if source is not None else None
    prompt_metadata = [read_prompt(path)[1] for path in prompts]

    # Unreadable images stop the run now, before any file is written or any
    # training starts (or, with skip_corrupt, are left out everywhere).
    skipped = set()

    def check(view, split, where):
        if view.source.root is not None:  # image files (TFDS records are checked by TFDS)
            skipped.update(check_images(view.items(split), where, config.skip_corrupt, log))

    for key, view in views:
        check(view, "test", f"the test split of {key}")
    if trains:
        for seed in config.seeds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # short classes are reported when training starts
                few_shot = source_data.few_shot(config.shots, seed).subsample(subset)
            check(few_shot, "train", f"the {config.shots}-shot training images of {source_name}, seed {seed}")
    if skipped:
        views = [(key, view.without(skipped)) for key, view in views]

    settings = {
        "format": RESULTS_FORMAT,
        "protocol": protocol,
        "source": source_name,
        "subset": subset,
        "evaluations": [[_canonical(n), s] for n, s in evaluations],
        "prompts": [os.path.abspath(p) for p in prompts],
        "config": {k: v for k, v in config.to_dict().items() if k not in ("data_root", "eval_batch_size")},
    }
    strategy = make_strategy(config.strategy, config.tpu)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    folder = None
    try:
        with strategy.scope():
            clip = load_clip(config.backbone)
            # Class sets the models cannot take (a name too long for the context, words
            # the backbone never learned), or a prompt that does not fit this backbone,
            # stop here, before the run folder is written.
            _build_every_model(clip, config, prompts, prompt_metadata, force, source_data, subset, views)
        folder = RunFolder(output, settings, resume, write_files=is_chief(), log=log)
        image_size = config.image_size or clip.vision_encoder.image_shape[0]
        log(
            f"{protocol}: backbone {config.backbone} ({image_size}px), "
            f"{strategy.num_replicas_in_sync} replica(s), precision {config.precision}"
        )
        if prompts:
            jobs = [(metadata["method"].lower(), None, path) for metadata, path in zip(prompt_metadata, prompts)]
        else:
            jobs = [
                (method, seed, None)
                for method in config.methods
                for seed in ([None] if method == "zeroshot" else config.seeds)
            ]
        runs = []
        for index, (method, seed, prompt) in enumerate(jobs, start=1):
            run_dir = folder.run_dir(method, seed) if prompt is None else os.path.join(
                folder.path, "runs", f"prompt{index}"
            )
            label = f"[{index}/{len(jobs)}] {METHOD_NAMES[method]}" + ("" if seed is None else f", seed {seed}")
            result_file = os.path.join(run_dir, "result.json")
            if resume and os.path.exists(result_file):
                done = read_json(result_file)
                if done is not None:
                    runs.append(done)
                    log(f"{label}: done before, kept")
                    continue
                log(f"{label}: {result_file} is damaged; evaluating this run again")
            log(f"{label}")
            set_seeds(seed if seed is not None else 0, config.deterministic)
            model = None
            if prompt is not None:
                with strategy.scope():
                    model = _model_from_prompt(clip, prompt, prompt_metadata[index - 1], force)
            elif method != "zeroshot":
                few_shot = source_data.few_shot(
                    config.shots, seed, cache_dir=os.path.join(folder.path, "splits") if folder.write_files else None
                ).subsample(subset).without(skipped)
                log(
                    f"  training on {config.shots} shots of {few_shot.num_classes} {subset} classes "
                    f"of {source_name} ({len(few_shot.train)} images), {config.epochs} epochs"
                )
                training = training_record(protocol, source_name, subset, seed, config)
                with strategy.scope():
                    model = build_model(method, clip, few_shot.classnames, config, None)
                    train_prompt_model(
                        model, few_shot, config, seed, image_size,
                        checkpoint_dir=os.path.join(run_dir, "checkpoints"),
                        log_dir=os.path.join(run_dir, "tensorboard"),
                        resume=resume, write_files=folder.write_files, training=training, log=log,
                    )
                if folder.write_files:
                    model.save_prompt(os.path.join(run_dir, "prompt.safetensors"), training=training)
            run = {"method": method, "seed": seed, "accuracy": {}, "predictions": {}}
            if prompt is not None:
                run["prompt"] = os.path.abspath(prompt)
                run["trained"] = prompt_metadata[index - 1].get("training")
                run["seed"] = (run["trained"] or {}).get("seed")
            for key, view in views:
                if method == "zeroshot":
                    with strategy.scope():
                        model = build_model(method, clip, view.classnames, config, config.templates or view.template)
                else:
                    model.set_classnames(view.classnames)
                labels, predicted = predict_split(model, view, "test", config.eval_batch_size, image_size)
                run["accuracy"][key] = accuracy(labels, predicted)
                path = os.path.join(run_dir, "predictions", f"{key}.npz")
                if folder.write_files:
                    save_predictions(path, labels, predicted, view.classnames)
                run["predictions"][key] = folder.relative(path)
                log(f"  {key}: {run['accuracy'][key]:.2f}% of {len(labels)} test images")
            if protocol == "base2new":
                run["h"] = harmonic_mean(run["accuracy"]["base"], run["accuracy"]["new"])
                log(f"  H: {run['h']:.2f}")
            if folder.write_files:
                write_text(result_file, json.dumps(run, indent=2))
            runs.append(run)
    except BaseException:
        if folder is not None:
            folder.close()
        raise
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    try:
        keys = [key for key, _ in views]
        targets = [key for key in keys if key != source_name]
        if protocol == "base2new":
            published = published_base_to_new(source_name)
        elif protocol in ("cross-dataset", "domain-generalization"):
            published = published_transfer(protocol, source_name)
        else:
            published = None
        results = {
            **settings,
            "config": config.to_dict(),
            "versions": versions(),
            "evaluations": keys,
            "targets": targets,
            "classes": {key: view.classnames for key, view in views},
            "runs": runs,
            "summary": summarize(protocol, runs, keys, targets),
            "published": published,
            "seconds": round(time.time() - started, 1),
        }
        if folder.write_files:
            table = write_results(folder.path, results)
            log("")
            log(table)
            log(f"Results in {folder.path}: results.json, results.md, results.csv, results.png")
        return results
    finally:
        folder.close()


def _build_every_model(clip, config, prompts, prompt_metadata, force, source_data, subset, views):
    """Builds each model the run will build, on each class set it will take; raises what they raise."""
    if prompts:
        models = [_model_from_prompt(clip, p, m, force) for p, m in zip(prompts, prompt_metadata)]
    else:
        models = [
            build_model(method, clip, source_data.subsample(subset).classnames, config, None)
            for method in config.methods if method != "zeroshot"
        ]
        if "zeroshot" in config.methods:
            for _, view in views:
                build_model("zeroshot", clip, view.classnames, config, config.templates or view.template)
    for model in models:
        for _, view in views:
            model.set_classnames(view.classnames)


def training_record(protocol, source, subset, seed, config):
    """What a prompt file records of its training: the protocol, data, seed and settings."""
    settings = {
        k: v for k, v in config.to_dict().items()
        if k not in ("methods", "seeds", "eval_batch_size", "templates", "data_root")
    }
    return {"protocol": protocol, "dataset": source, "subset": subset, "seed": seed, **settings}


def _model_from_prompt(clip, path, metadata, force=False):
    from cocoop_tf.models import CoCoOp
    from cocoop_tf.models import CoOp

    method = {"CoOp": CoOp, "CoCoOp": CoCoOp}.get(metadata.get("method"))
    if method is None:
        raise ValueError(f"{path!r} holds a {metadata.get('method')!r} prompt; expected CoOp or CoCoOp.")
    try:
        return method.from_prompt(clip, path, force=force)
    except ValueError as error:
        raise ValueError(f"{error} (backbone: the --backbone given here)") from None
