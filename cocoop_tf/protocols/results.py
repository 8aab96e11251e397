"""Results files: results.json, a Markdown table in the paper's layout, CSV and a plot.

`results.json` (format `cocoop_tf.results/1`):

- `protocol`: "base2new", "cross-dataset", "domain-generalization", "train"
  or "evaluate"; `source`: the training dataset (None for zero-shot only);
  `evaluations`: the evaluation names in order ("base" and "new" for
  base-to-new, dataset names otherwise);
- `config`: every setting of the run; `versions`: library versions;
- `data`: per dataset, a digest of its class names and image lists
  (`identity.data_fingerprint`); `backbone_weights`: the fingerprint of the
  backbone's weights; `prompt_files`: a digest of each `prompts` file;
- `classes`: the class names of each evaluation, in label order;
- `runs`: one entry per method and seed (zero-shot CLIP has no seed and
  one entry): `{"method", "seed", "accuracy": {evaluation: percent},
  "predictions": {evaluation: path of an .npz with labels and predicted,
  relative to the results folder}}`, plus `"h"` in base-to-new;
- `summary`: per method, per evaluation `{"mean", "std"}` over seeds
  (population std, as CoOp's result parser); base-to-new adds `h` with
  `"of_means"` (the harmonic mean of mean Base and mean New, the paper's H),
  `"mean"` and `"std"` of the per-seed H; cross-dataset adds `"average"`
  over the target datasets;
- `published`: the methods' published numbers for the same protocol and dataset
  (`{method: {evaluation: percent}}`), or None.
"""

import csv
import importlib.metadata
import io
import json
import os
import platform

import numpy as np

from cocoop_tf.files import write_bytes
from cocoop_tf.files import write_text
from cocoop_tf.models import get_method
from cocoop_tf.protocols.config import method_settings
from cocoop_tf.protocols.protocol import get_protocol
from cocoop_tf.protocols.published import SOURCES

RESULTS_FORMAT = "cocoop_tf.results/1"


def display_name(method):
    """A method's name in tables ("CoOp"); the name itself for a method no longer registered."""
    try:
        return get_method(method).display_name
    except ValueError:
        return method


def harmonic_mean(base, new):
    """H = 2 * base * new / (base + new), 0 when both are 0."""
    return 0.0 if base + new == 0 else 2.0 * base * new / (base + new)


def versions():
    """Versions of the libraries that decide the numbers."""
    found = {"python": platform.python_version()}
    for package in ("cocoop-tf", "tensorflow", "keras", "keras-hub", "numpy"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def _stats(values):
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "std": float(values.std())}


def summarize(protocol, runs, evaluations, targets=()):
    """Mean and std over seeds per method and evaluation (see the module docstring)."""
    summary = {}
    for method in dict.fromkeys(run["method"] for run in runs):
        mine = [run for run in runs if run["method"] == method]
        entry = {key: _stats([run["accuracy"][key] for run in mine]) for key in evaluations}
        kind = get_protocol(protocol).summary
        if kind == "h":
            entry["h"] = {
                "of_means": harmonic_mean(entry["base"]["mean"], entry["new"]["mean"]),
                **_stats([run["h"] for run in mine]),
            }
        if kind == "average" and targets:
            entry["average"] = _stats(
                [np.mean([run["accuracy"][t] for t in targets]) for run in mine]
            )
        entry["seeds"] = [run["seed"] for run in mine]
        summary[method] = entry
    return summary


def write_results(folder, results):
    """Writes results.json, results.md, results.csv and results.png into `folder`.

    Returns:
        The Markdown table.
    """
    write_text(os.path.join(folder, "results.json"), json.dumps(results, indent=2))
    table = markdown_table(results)
    write_text(os.path.join(folder, "results.md"), table)
    write_csv(os.path.join(folder, "results.csv"), results)
    plot(os.path.join(folder, "results.png"), results)
    return table


def _columns(results):
    """The table's columns: (key in summary, heading)."""
    kind = get_protocol(results["protocol"]).summary
    if kind == "h":
        return [("base", "Base"), ("new", "New"), ("h", "H")]
    columns = [(key, key) for key in results["evaluations"]]
    if kind == "average" and results.get("targets"):
        columns.append(("average", "Average"))
    return columns


def _cell(entry):
    if entry is None:
        return ""
    value = entry.get("of_means", entry["mean"])
    return f"{value:.2f} ± {entry['std']:.2f}" if entry["std"] else f"{value:.2f}"


def _listed(names):
    """Names joined as in a sentence: A; A and B; A, B and C."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def markdown_table(results):
    """The summary as a Markdown table in the layout of the paper's tables."""
    columns = _columns(results)
    what = results.get("source") or ", ".join(results["evaluations"])
    lines = [
        f"### {get_protocol(results['protocol']).title}: {what}",
        "",
        *_settings_lines(results),
        "",
        "| Method | " + " | ".join(heading for _, heading in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    published = results.get("published") or {}
    sources = {}  # source: the methods with (paper) rows from it
    for method, entry in results["summary"].items():
        lines.append(
            f"| {display_name(method)} | " + " | ".join(_cell(entry.get(key)) for key, _ in columns) + " |"
        )
        if method in published:
            paper = published[method]
            sources.setdefault(SOURCES[method], []).append(display_name(method))
            lines.append(
                f"| {display_name(method)} (paper) | "
                + " | ".join(f"{paper[key]:.2f}" if key in paper else "" for key, _ in columns)
                + " |"
            )
    if sources:
        origins = "; ".join(f"{_listed(names)} from {source}" for source, names in sources.items())
        lines += ["", f"Rows marked (paper) are published ViT-B/16 numbers, mean of 3 seeds: {origins}."]
    return "\n".join(lines) + "\n"


def _shots(shots, used=None):
    """"16 shots", or with the images per class the runs drew where fewer (`used`: fewest and
    most), "16 shots (8 per class used: all there were)"."""
    if not used or used[0] >= shots:
        return f"{shots} shots"
    fewest, most = used
    if fewest == most:
        return f"{shots} shots ({fewest} per class used: all there were)"
    return f"{shots} shots ({fewest}-{most} per class used: all there were where fewer)"


def _training_line(config, method=None, used=None):
    """How a method was trained, in words: the run's settings that decide its numbers
    (`used`: the fewest and most training images per class its runs drew)."""
    ctx_init, n_ctx = config["ctx_init"], config["n_ctx"]
    if not ctx_init:
        context = f"{n_ctx} random vectors"
    elif n_ctx in (None, len(ctx_init.split())):
        context = repr(ctx_init)
    else:  # MaPLe, IVLP, PromptSRC: the first n_ctx words learned, the others text
        context = f"{ctx_init!r} ({n_ctx} vectors)"
    try:
        takes = set(get_method(method).run_settings) if method else set()
    except ValueError:  # a method no longer registered
        takes = set()
    depth = config.get("prompt_depth")
    if "n_ctx_vision" in takes:  # IVLP, PromptSRC: prompts of their own in each tower
        vision_depth = depth if config.get("vision_prompt_depth") is None else config["vision_prompt_depth"]
        if vision_depth == 0:
            context += f" at depth {depth}, no vision prompts"
        elif vision_depth == depth:
            context += f", {config.get('n_ctx_vision')} vision vectors, depth {depth} in both towers"
        else:
            context += f" at depth {depth}, {config.get('n_ctx_vision')} vision vectors at depth {vision_depth}"
    elif "prompt_depth" in takes:  # MaPLe
        context += f", depth {depth}"
    line = (
        f"{_shots(config['shots'], used)}, {config['epochs']} epochs, batch size {config['batch_size']}, "
        f"lr {config['lr']:g}, context {context}"
    )
    if "text_loss_weight" in takes:  # PromptSRC
        text, image, mean, std = (_number(config.get(k)) for k in
                                  ("text_loss_weight", "image_loss_weight", "gpa_mean", "gpa_std"))
        line += f", L1 weights {text} (text) and {image} (image), GPA mean {mean} std {std}"
    return line


def _number(value):
    """25.0 as 25, 0.5 as 0.5; what is not a number (a record of an older version) as it is."""
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _settings_lines(results):
    """What the numbers were measured with: the training settings of the prompts evaluated."""
    config = results["config"]
    accuracy = "Top-1 accuracy (%), mean ± std over seeds"
    if get_protocol(results["protocol"]).summary == "h":
        accuracy += " (H: harmonic mean of the mean Base and New)"
    trained = [run for run in results["runs"] if run["seed"] is not None or run.get("prompt")]
    if results["protocol"] != "evaluate":
        seeds = ", ".join(map(str, config["seeds"]))
        lines = {
            display_name(m): _training_line(method_settings(config, m), m, _used(results["runs"], m))
            for m in config["methods"] if get_method(m).learns
        }
        if len(set(lines.values())) > 1:  # methods trained with their own papers' settings
            what = "; ".join(f"{name}: {line}" for name, line in lines.items()) + f"; seeds {seeds}"
        else:
            what = f"{next(iter(lines.values()))}, seeds {seeds}" if trained else "zero-shot"
        return [f"Backbone `{config['backbone']}`, {what}. {_compute(results)}. {accuracy}."]
    lines = [f"Backbone `{config['backbone']}`. {_compute(results)}. {accuracy}."]
    for run in trained:
        record = run.get("trained")
        if record is None:
            lines.append(f"- {display_name(run['method'])} prompt `{run['prompt']}`: "
                         "its file does not record how it was trained.")
            continue
        lines.append(
            f"- {display_name(run['method'])} prompt `{run['prompt']}`: trained on "
            f"{record['dataset']} ({record['subset']} classes), seed {record['seed']}, "
            f"{_training_line(record, run['method'])}, backbone `{record['backbone']}`."
        )
    return lines


def _used(runs, method):
    """The fewest and most training images per class a method's runs drew, or None."""
    drawn = [run["shots_used"] for run in runs if run.get("method") == method and run.get("shots_used")]
    return [min(d[0] for d in drawn), max(d[1] for d in drawn)] if drawn else None


def _compute(results):
    """The precision and XLA setting the run computed with."""
    config = results["config"]
    xla = results.get("xla")
    if xla is None:  # a results file of an older version
        return f"Precision {config.get('precision', 'float32')}"
    how = "on" if xla else "off"
    if config.get("jit_compile") == "auto":
        how += " (auto)"
    return f"Precision {config.get('precision', 'float32')}, XLA {how}"


def write_csv(path, results):
    """One row per method, seed and evaluation: the raw numbers behind the summary."""
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(["protocol", "source", "method", "seed", "evaluation", "accuracy"])
    for run in results["runs"]:
        values = dict(run["accuracy"])
        if "h" in run:
            values["h"] = run["h"]
        for key, value in values.items():
            writer.writerow(
                [results["protocol"], results.get("source") or "", run["method"],
                 "" if run["seed"] is None else run["seed"], key, f"{value:.4f}"]
            )
    write_text(path, f.getvalue())  # whole or not at all, as every results file


def plot(path, results):
    """Grouped bars per evaluation and method, std as error bars, the paper's as markers;
    returns the `Figure`."""
    # A Figure of its own, not pyplot: no GUI backend is needed, and the
    # caller's backend (a notebook's inline plots) is left alone.
    from matplotlib.figure import Figure

    columns = _columns(results)
    methods = list(results["summary"])
    published = results.get("published") or {}
    width = 0.8 / len(methods)
    positions = np.arange(len(columns))
    paper_label = "paper"
    figure = Figure(figsize=(max(5, 1.3 * len(columns) + 2), 3.6), dpi=120)
    axes = figure.subplots()
    for i, method in enumerate(methods):
        entry = results["summary"][method]
        heights = [entry[key].get("of_means", entry[key]["mean"]) for key, _ in columns]
        errors = [entry[key]["std"] for key, _ in columns]
        x = positions + (i - (len(methods) - 1) / 2) * width
        bars = axes.bar(x, heights, width, yerr=errors, capsize=2, label=display_name(method))
        for bar, height, error in zip(bars, heights, errors):
            top = height + (error if np.isfinite(error) else 0)  # above the error bar, not on it
            axes.annotate(f"{height:.1f}", (bar.get_x() + bar.get_width() / 2, top),
                          ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
        paper = published.get(method, {})
        marked = [(xi, paper[key]) for xi, (key, _) in zip(x, columns) if key in paper]
        if marked:
            axes.scatter(*zip(*marked), marker="_", s=200, color="black", zorder=3, label=paper_label)
            paper_label = None  # one legend entry
    axes.set_xticks(positions, [heading for _, heading in columns],
                    rotation=30 if len(columns) > 4 else 0, ha="right" if len(columns) > 4 else "center")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_ylim(0, 105)
    axes.set_title(f"{get_protocol(results['protocol']).title}: {results.get('source') or ''}".rstrip(": "))
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png")
    write_bytes(path, image.getvalue())  # a full disk leaves no empty results.png
    return figure
