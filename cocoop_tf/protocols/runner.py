"""The paper's protocols, end to end: data, training per method and seed, evaluation, results.

Every protocol is the same loop: for each method and seed, train on the
few-shot source view (a method that learns; zero-shot CLIP trains nothing
and runs once), then evaluate on a list of test sets, each with its own
class names. `run_protocol` is four steps: `plan_run` (data, checks, jobs),
then per job `train_job` and `evaluate_job`, then `report`. What each
protocol means (keys, summary, published numbers) is its `Protocol` value.

- base-to-new: train on the base classes, evaluate on base and new;
- cross-dataset: train on all source classes, evaluate on the source and
  other datasets;
- domain generalisation: the same, on domain-shifted versions of the source;
- train / evaluate: one of those steps alone.

The output folder holds everything (see `RunFolder`); an interrupted run
continues with `resume=True`.
"""

import collections
import dataclasses
import glob
import json
import math
import os
import time
import warnings

import keras

from cocoop_tf.clip import load_clip
from cocoop_tf.clip.backbone import fingerprint
from cocoop_tf.data import load_dataset
from cocoop_tf.data.benchmarks import find_benchmark
from cocoop_tf.data.checks import check_images
from cocoop_tf.files import write_text
from cocoop_tf.models import get_method
from cocoop_tf.models import model_from_prompt
from cocoop_tf.models import read_prompt
from cocoop_tf.protocols.distribute import LOST_WORKER_ERRORS
from cocoop_tf.protocols.distribute import WorkerLostError
from cocoop_tf.protocols.distribute import is_chief
from cocoop_tf.protocols.distribute import make_strategy
from cocoop_tf.protocols.distribute import set_seeds
from cocoop_tf.protocols.evaluation import accuracy
from cocoop_tf.protocols.evaluation import predict_split
from cocoop_tf.protocols.evaluation import remove_shards
from cocoop_tf.protocols.evaluation import save_predictions
from cocoop_tf.protocols.identity import data_fingerprint
from cocoop_tf.protocols.identity import file_digest
from cocoop_tf.protocols.identity import safetensors_metadata
from cocoop_tf.protocols.protocol import get_protocol
from cocoop_tf.protocols.results import RESULTS_FORMAT
from cocoop_tf.protocols.results import display_name
from cocoop_tf.protocols.results import harmonic_mean
from cocoop_tf.protocols.results import summarize
from cocoop_tf.protocols.results import versions
from cocoop_tf.protocols.results import write_results
from cocoop_tf.protocols.run_folder import RunFolder
from cocoop_tf.protocols.run_folder import RunFolderError
from cocoop_tf.protocols.run_folder import RunLog
from cocoop_tf.protocols.run_folder import _differences
from cocoop_tf.protocols.run_folder import read_json
from cocoop_tf.protocols.training import EPOCH_FILE
from cocoop_tf.protocols.training import build_model
from cocoop_tf.protocols.training import train_prompt_model
from cocoop_tf.protocols.training import uses_xla
from cocoop_tf.training.workers import json_from_chief
from cocoop_tf.training.workers import spans_workers

# Settings that change how a test split is predicted, never the predictions: a resumed run may
# change them, and prompt files do not record them.
EVALUATION_ONLY = ("eval_batch_size", "eval_shard_size")
# Settings of what a run keeps on disk, never of its results: a resumed run may change them too.
STORAGE_ONLY = ("keep_checkpoints",)


def _canonical(name):
    benchmark = find_benchmark(os.fspath(name))
    return benchmark.name if benchmark else os.path.basename(os.path.normpath(os.fspath(name)))


@dataclasses.dataclass
class RunPlan:
    """What a run will do, known before anything is written (see `plan_run`)."""

    protocol: object
    config: object
    source: str
    source_data: object
    subset: str
    views: list
    prompts: list
    skipped: set
    settings: dict
    jobs: list
    # Filled in as the run goes: whether its steps compile with XLA, and the training images
    # per class each (method, seed) drew, fewest and most (fewer than --shots where a class
    # has fewer).
    xla: bool = None
    shots_used: dict = dataclasses.field(default_factory=dict)

    def few_shot(self, seed, cache_dir=None):
        """The few-shot training view of a seed, without the images left out."""
        view = self.source_data.few_shot(self.config.shots, seed, cache_dir=cache_dir)
        return view.subsample(self.subset).without(self.skipped)


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
            "train" or "evaluate" (see `cocoop_tf.protocols.protocol`).
        config: a `RunConfig`.
        output: the output folder (see `RunFolder`).
        source: the training dataset (name or folder), for methods that learn.
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
    log = RunLog(log)
    # The strategy first: a multi-worker one must be made before TensorFlow runs any op
    # (checking the images decodes them), or it fails ("configured at program startup").
    strategy = make_strategy(config.strategy, config.tpu)
    plan = plan_run(protocol, config, source, subset, evaluations, prompts, log)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    folder = None
    try:
        with strategy.scope():
            clip = load_clip(config.backbone)
            # Class sets the models cannot take (a name too long for the context, words
            # the backbone never learned), or a prompt that does not fit this backbone,
            # stop here, before the run folder is written.
            _build_every_model(clip, plan, force)
        # The weights are the backbone's identity: a folder or file given by --backbone may
        # hold other weights than when the run started.
        plan.settings["backbone_weights"] = fingerprint(clip)
        folder = RunFolder(
            output, plan.settings, resume, write_files=is_chief(), log=log,
            check_files=lambda: check_run_files(plan, output),
        )
        if folder.write_files:
            log.open(folder.path)
        image_size = config.image_size or clip.vision_encoder.image_shape[0]
        plan.xla = uses_xla(config.jit_compile, clip)
        log(
            f"{protocol}: backbone {config.backbone} ({image_size}px), "
            f"{strategy.num_replicas_in_sync} replica(s), precision {config.precision}"
        )
        runs = []
        for index, (method, seed, prompt) in enumerate(plan.jobs, start=1):
            run_dir = _run_dir(plan, folder.path, index)
            label = f"[{index}/{len(plan.jobs)}] {display_name(method)}" + ("" if seed is None else f", seed {seed}")
            result_file = os.path.join(run_dir, "result.json")
            if resume:
                done = None
                if folder.write_files and os.path.exists(result_file):
                    done = finished_run(read_json(result_file), plan, method, seed, prompt)
                    if done is None:
                        log(f"{label}: {result_file} is damaged; evaluating this run again")
                # The chief's verdict on every worker: the others may not see its folder.
                done = json_from_chief(strategy, done)
                if done is not None:
                    runs.append(done)
                    log(f"{label}: done before, kept")
                    continue
            log(f"{label}")
            set_seeds(seed if seed is not None else 0, config.deterministic)
            with strategy.scope():
                if prompt is not None:
                    model = model_from_prompt(clip, prompt, force=force)
                elif get_method(method).learns:
                    model = train_job(plan, method, seed, clip, folder, run_dir, image_size, resume, log)
                else:
                    model = None  # built per test set, on its classes and templates
            run = evaluate_job(plan, method, seed, prompt, model, clip, strategy, folder, run_dir, image_size, log)
            if (method, seed) in plan.shots_used:
                run["shots_used"] = plan.shots_used[method, seed]
            if folder.write_files:  # with the settings it belongs to (see check_run_files)
                write_text(result_file, json.dumps({**run, "settings": plan.settings}, indent=2))
            runs.append(run)
    except BaseException as error:
        log.record(f"stopped: {type(error).__name__}: {error}")
        log.close()
        if folder is not None:
            folder.close()
        if spans_workers(strategy) and isinstance(error, LOST_WORKER_ERRORS):
            raise WorkerLostError.from_error(error, output) from None
        raise
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    try:
        return report(plan, runs, folder, started, log)
    finally:
        log.close()
        folder.close()


def plan_run(protocol, config, source, subset, evaluations, prompts, log=print):
    """Loads the datasets, checks their images and lists the jobs; writes nothing.

    Returns:
        A `RunPlan`. Unreadable images raise here (or, with `skip_corrupt`,
        are left out of every view).
    """
    definition = get_protocol(protocol)
    datasets = {}

    def dataset(name):
        if name not in datasets:
            datasets[name] = load_dataset(name, config.data_root)
        return datasets[name]

    learners = [m for m in config.methods if get_method(m).learns]
    trains = bool(learners) and not prompts
    if trains and source is None:
        raise ValueError(
            f"{', '.join(map(display_name, learners))} need a training dataset (--dataset or --source)."
        )
    views = []
    for name, sub in evaluations:
        key = sub if definition.keyed_by_subset else _canonical(name)
        if any(key == k for k, _ in views):
            raise ValueError(f"{key!r} is evaluated twice; give each test set once.")
        views.append((key, dataset(name).subsample(sub)))
    source_data = dataset(source) if trains else None
    source_name = _canonical(source) if source is not None else None
    prompt_files = [(path, read_prompt(path)[1]) for path in prompts]

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

    if prompts:
        jobs = [(get_method(metadata["method"]).method, None, path) for path, metadata in prompt_files]
    else:
        jobs = [
            (method, seed, None)
            for method in config.methods
            for seed in (config.seeds if get_method(method).learns else [None])
        ]
    # The data's identity, not its path: the same files under another --data-root (another
    # machine, a moved disk) are the same data.
    splits = {}
    for name, _ in evaluations:
        splits.setdefault(_canonical(name), (dataset(name), set()))[1].add("test")
    if trains:
        splits.setdefault(source_name, (source_data, set()))[1].update(("train", "val"))
    settings = {
        "format": RESULTS_FORMAT,
        "protocol": protocol,
        "source": source_name,
        "subset": subset,
        "evaluations": [[_canonical(n), s] for n, s in evaluations],
        "prompts": [os.path.abspath(p) for p in prompts],
        "prompt_files": [file_digest(p) for p in prompts],
        "data": {name: data_fingerprint(data, sorted(used), skipped) for name, (data, used) in splits.items()},
        "config": {k: v for k, v in config.to_dict().items() if k not in ("data_root", *EVALUATION_ONLY, *STORAGE_ONLY)},
    }
    return RunPlan(definition, config, source_name, source_data, subset, views, prompt_files, skipped,
                   settings, jobs)


def train_job(plan, method, seed, clip, folder, run_dir, image_size, resume, log=print):
    """Trains one method on one seed's few-shot view; returns the model (its prompt file written)."""
    config = plan.config.for_method(method)
    few_shot = plan.few_shot(seed, os.path.join(folder.path, "splits") if folder.write_files else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        per_class = collections.Counter(item.label for item in few_shot.train)  # warns of short classes
    for warning in caught:  # shown as before, and kept in the run's log
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        getattr(log, "record", lambda line: None)(f"warning: {warning.message}")
    plan.shots_used[method, seed] = [min(per_class.values(), default=0), max(per_class.values(), default=0)]
    log(
        f"  training on {config.shots} shots of {few_shot.num_classes} {plan.subset} classes "
        f"of {plan.source} ({len(few_shot.train)} images), {config.epochs} epochs of batch {config.batch_size}"
    )
    training = _training(plan, method, seed)
    model = build_model(method, clip, few_shot.classnames, config, few_shot.template)
    train_prompt_model(
        model, few_shot, config, seed, image_size,
        checkpoint_dir=os.path.join(run_dir, "checkpoints"),
        log_dir=os.path.join(run_dir, "tensorboard"),
        resume=resume, write_files=folder.write_files, training=training, log=log,
        record=getattr(log, "record", None),
    )
    if folder.write_files:
        model.save_prompt(os.path.join(run_dir, "prompt.safetensors"), training=training)
    return model


def evaluate_job(plan, method, seed, prompt, model, clip, strategy, folder, run_dir, image_size, log=print):
    """Evaluates one job's model on every test set; returns its `runs` entry."""
    config = plan.config
    run = {"method": method, "seed": seed, "accuracy": {}, "predictions": {}}
    if prompt is not None:
        run["prompt"] = os.path.abspath(prompt)
        run["trained"] = dict(plan.prompts)[prompt].get("training")
        run["seed"] = (run["trained"] or {}).get("seed")
    for key, view in plan.views:
        if not get_method(method).learns:  # zero-shot: built on each test set's classes and templates
            with strategy.scope():
                model = build_model(method, clip, view.classnames, config, view.template)
        else:
            model.set_classnames(view.classnames)
        path = os.path.join(run_dir, "predictions", f"{key}.npz")
        shards = os.path.join(run_dir, "predictions", f"{key}.shards")
        if folder.write_files:
            _claim_shards(shards, plan.settings)
        labels, predicted = predict_split(
            model, view, "test", config.eval_batch_size, image_size, shard_size=config.eval_shard_size,
            shard_dir=shards, write_files=folder.write_files, log=log,
        )
        run["accuracy"][key] = accuracy(labels, predicted)
        if folder.write_files:
            save_predictions(path, labels, predicted, view.classnames)
            remove_shards(shards)
        run["predictions"][key] = folder.relative(path)
        log(f"  {key}: {run['accuracy'][key]:.2f}% of {len(labels)} test images")
    if plan.protocol.summary == "h":
        run["h"] = harmonic_mean(run["accuracy"]["base"], run["accuracy"]["new"])
        log(f"  H: {run['h']:.2f}")
    return run


def report(plan, runs, folder, started, log=print):
    """Summarises the runs, writes the results files (chief only) and returns the results dict."""
    keys = [key for key, _ in plan.views]
    targets = [key for key in keys if key != plan.source]
    results = {
        **plan.settings,
        "config": plan.config.to_dict(),
        "versions": versions(),
        "evaluations": keys,
        "targets": targets,
        "classes": {key: view.classnames for key, view in plan.views},
        "runs": runs,
        "summary": summarize(plan.protocol.name, runs, keys, targets),
        "published": plan.protocol.published_numbers(plan.source),
        "seconds": round(time.time() - started, 1),
        "xla": plan.xla,
    }
    if folder.write_files:
        table = write_results(folder.path, results)
        log("")
        log(table)
        log(f"Results in {folder.path}: results.json, results.md, results.csv, results.png")
    return results


def _build_every_model(clip, plan, force):
    """Builds each model the run will build, on each class set it will take; raises what they raise."""
    config = plan.config
    if plan.prompts:
        models = [model_from_prompt(clip, path, force=force) for path, _ in plan.prompts]
    else:
        classnames = plan.source_data.subsample(plan.subset).classnames if plan.source_data else None
        template = plan.source_data.template if plan.source_data else None
        models = []
        for method in config.methods:
            if get_method(method).learns:
                models.append(build_model(method, clip, classnames, config, template))
            else:
                for _, view in plan.views:
                    build_model(method, clip, view.classnames, config, view.template)
    for model in models:
        trained_on = list(model.classnames)
        for key, view in plan.views:
            if model.classes_fixed and list(view.classnames) != trained_on:
                raise ValueError(
                    f"This {type(model).__name__} learns weights for each of its training classes "
                    f"(class-specific), and cannot be evaluated on other classes ({key}); turn "
                    "class_specific off for this protocol."
                )
            model.set_classnames(view.classnames)


def training_record(protocol, source, subset, seed, config):
    """What a prompt file records of its training: the protocol, data, seed and settings."""
    settings = {
        k: v for k, v in config.to_dict().items()
        if k not in ("methods", "seeds", "templates", "data_root", *EVALUATION_ONLY, *STORAGE_ONLY)
    }
    return {"protocol": protocol, "dataset": source, "subset": subset, "seed": seed, **settings}


def _training(plan, method, seed):
    """What the prompt files of a job record of its training, the data's identity too."""
    record = training_record(plan.protocol.name, plan.source, plan.subset, seed, plan.config.for_method(method))
    return {**record, "data": plan.settings["data"][plan.source]}


def _run_dir(plan, output, index):
    """The folder of the job `plan.jobs[index - 1]`."""
    method, seed, prompt = plan.jobs[index - 1]
    name = f"prompt{index}" if prompt is not None else method if seed is None else f"{method}_seed{seed}"
    return os.path.join(os.fspath(output), "runs", name)


def _percent(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 100


def finished_run(done, plan, method, seed, prompt=None):
    """The `runs` entry a job's `result.json` holds, or None when it is damaged.

    Damaged means anything but this job's entry of this run: not JSON, another
    shape, another job, or no record of the run's settings (an older version).

    Args:
        done: the file's JSON value (`read_json`).
        plan: the `RunPlan`.
        method, seed, prompt: the job's (see `RunPlan.jobs`).
    """
    if not isinstance(done, dict) or done.get("settings") != plan.settings or done.get("method") != method:
        return None
    run = {k: v for k, v in done.items() if k != "settings"}
    keys = sorted(key for key, _ in plan.views)
    accuracy, predictions = run.get("accuracy"), run.get("predictions")
    if not (isinstance(accuracy, dict) and sorted(accuracy) == keys and all(map(_percent, accuracy.values()))):
        return None
    if not (isinstance(predictions, dict) and sorted(predictions) == keys
            and all(isinstance(p, str) for p in predictions.values())):
        return None
    if plan.protocol.summary == "h" and not _percent(run.get("h")):
        return None
    if prompt is not None:  # what a prompt job records comes from its prompt file
        trained = dict(plan.prompts)[prompt].get("training")
        expected = {"prompt": os.path.abspath(prompt), "trained": trained, "seed": (trained or {}).get("seed")}
        if json.loads(json.dumps(expected)) != {k: run.get(k) for k in expected}:
            return None
    elif run.get("seed") != seed or "prompt" in run:
        return None
    return run


def check_run_files(plan, output):
    """Raises `RunFolderError` when a result or checkpoint in `output` belongs to other settings.

    `result.json` records the run's settings and each prompt file (an epoch's
    checkpoint, the final prompt) the job's training settings and the backbone's
    weights: a folder whose `run.json` was lost must not lend its numbers to a
    command with other settings. A damaged file is left to the usual fallbacks.
    """
    backbone = plan.settings.get("backbone_weights")
    for index, (method, seed, prompt) in enumerate(plan.jobs, start=1):
        run_dir = _run_dir(plan, output, index)
        result = os.path.join(run_dir, "result.json")
        done = read_json(result) if os.path.exists(result) else None
        if isinstance(done, dict) and isinstance(done.get("settings"), dict) and done["settings"] != plan.settings:
            _refuse(output, result, _differences(done["settings"], plan.settings))
        if prompt is not None or not get_method(method).learns:
            continue
        expected = json.loads(json.dumps(_training(plan, method, seed)))
        checkpoints = [p for p in glob.glob(os.path.join(run_dir, "checkpoints", "*.safetensors"))
                       if EPOCH_FILE.search(os.path.basename(p))]
        for path in sorted(checkpoints) + [os.path.join(run_dir, "prompt.safetensors")]:
            metadata = safetensors_metadata(path)
            if metadata is None:
                continue  # missing or damaged: training falls back to the epoch before
            try:
                training = json.loads(metadata.get("training", "null"))
            except (TypeError, ValueError, RecursionError):
                continue  # damaged
            if not isinstance(training, dict):
                _refuse(output, path, ["training (it records none)"])
            if training != expected:
                _refuse(output, path, _differences(training, expected))
            if backbone is not None and metadata.get("backbone") != backbone:
                _refuse(output, path, ["backbone_weights (the weights --backbone loads)"])


def _refuse(output, path, differing):
    raise RunFolderError(
        f"{os.path.relpath(path, output)} in {os.fspath(output)!r} was made with other settings than "
        f"this command's (different {', '.join(differing)}): the folder's results belong to "
        "them. Resume with the settings and data the run was started with, or choose a new "
        "--output folder."
    )


def _claim_shards(shards, settings):
    """Keeps a test split's finished shards only if this run's settings made them."""
    record = os.path.join(shards, "settings.json")
    if os.path.isdir(shards) and read_json(record) != settings:
        remove_shards(shards)  # another run's (its run.json lost), or an older version's
    if not os.path.exists(record):
        write_text(record, json.dumps(settings))

