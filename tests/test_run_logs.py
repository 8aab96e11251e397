"""What a run leaves for its user to read: log.txt, TensorBoard's learning rate, results.md's
shots and compute settings, the plot's labels, and the console's epoch lines."""

import json

import numpy as np
import pytest
import tensorflow as tf

from cocoop_tf.cli import main
from cocoop_tf.protocols.results import plot
from cocoop_tf.protocols.training import EpochLines
from test_data_helpers import write_class_folders

NAMES = ["apple", "banana", "cherry", "grape"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny base-to-new run, 2 epochs (the first a warm-up at 1e-5), 4 shots of classes with
    3 training images each; then the same command with --resume."""
    root = tmp_path_factory.mktemp("logs")
    write_class_folders(root / "images", {name: 6 for name in NAMES})
    command = ["base2new", "--dataset", str(root / "images"), "--backbone", "random_tiny",
               "--methods", "coop", "--seeds", "1", "--shots", "4", "--epochs", "2", "--batch-size", "1",
               "--output", str(root / "out")]
    assert main(command) == 0
    first = (root / "out" / "log.txt").read_text()
    assert main([*command, "--resume"]) == 0
    return root / "out", first


def test_log_txt_holds_the_console_lines_and_every_epoch_across_resume(run):
    output, first = run
    for line in ("base2new: backbone random_tiny", "[1/1] CoOp, seed 1", "training on 4 shots of 2 base classes",
                 "base: ", "new: ", "H: ", "Results in "):
        assert line in first, line
    epochs = [line for line in first.splitlines() if line.startswith("  epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["  epoch 1/2", "  epoch 2/2"]
    assert all("loss " in line for line in epochs) and "lr 1e-05" in epochs[0] and "lr 0.002" in epochs[1]
    log = (output / "log.txt").read_text()
    assert log.startswith(first) and log.count("\n--- ") + log.startswith("--- ") == 2  # appended
    assert "[1/1] CoOp, seed 1: done before, kept" in log[len(first):]


def test_tensorboard_learning_rate_is_the_one_each_epoch_used(run):
    output, _ = run
    (events,) = (output / "runs" / "coop_seed1" / "tensorboard" / "train").glob("events.out.tfevents.*")
    rates = {}
    for event in tf.compat.v1.train.summary_iterator(str(events)):
        for value in event.summary.value:
            if value.tag == "epoch_learning_rate":
                rates[event.step] = float(tf.make_ndarray(value.tensor))
    assert rates == {0: pytest.approx(1e-5), 1: pytest.approx(0.002)}


def test_results_md_says_the_shots_used_and_the_precision_and_xla(run):
    output, _ = run
    table = (output / "results.md").read_text()
    assert "4 shots (3 per class used: all there were)" in table
    assert "Precision float32, XLA off (auto)" in table
    runs = json.loads((output / "results.json").read_text())["runs"]
    assert runs[0]["shots_used"] == [3, 3]


def test_plot_labels_sit_above_the_error_bars(run, tmp_path):
    output, _ = run
    results = json.loads((output / "results.json").read_text())
    results["runs"].append({**results["runs"][0], "seed": 2})  # a std above 0 for the bars
    results["summary"]["coop"] = {key: {"mean": 40.0, "std": 10.0} for key in ("base", "new")}
    results["summary"]["coop"]["h"] = {"mean": 40.0, "std": 10.0, "of_means": 40.0}
    (axes,) = plot(tmp_path / "plot.png", results).axes
    labels = [text for text in axes.texts if text.get_text() == "40.0"]
    assert len(labels) == 3 and all(label.xy[1] >= 50.0 for label in labels)


class _Model:
    class optimizer:  # noqa: N801 (a stand-in for the model's optimizer)
        learning_rate = 0.002


def test_epoch_lines_are_few_on_the_console_and_all_in_the_log():
    shown, kept = [], []
    lines = EpochLines(100, shown.append, kept.append)
    lines.set_model(_Model())
    for epoch in range(100):
        lines.on_epoch_begin(epoch)
        lines.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
    assert [line.split(":")[0] for line in shown] == [f"  epoch {e}/100" for e in range(10, 101, 10)]
    assert len(shown) + len(kept) == 100 and "epoch 1/100: loss 1.0000, lr 0.002" in kept[0]
