"""The experiment runner end to end on tiny CoOp-layout datasets (random_tiny backbone).

Results files are checked against the documented schema, and every number in
them is recomputed here from the saved predictions.
"""

import csv
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file

from conftest import assert_quiet
from conftest import user_environment
from protocol_scripts import free_ports

from cocoop_tf.clip.backbone import build_backbone
from cocoop_tf.clip.loader import RANDOM_CONFIGS
import cocoop_tf
from cocoop_tf.clip import load_clip
from cocoop_tf.data import load_dataset
from cocoop_tf.models import read_prompt
from cocoop_tf.protocols import RunConfig
from cocoop_tf.protocols import RunFolderError
from cocoop_tf.protocols.results import _settings_lines
from cocoop_tf.protocols.run_folder import RunFolder
from cocoop_tf.protocols import load_predictions
from cocoop_tf.protocols import run_protocol
from cocoop_tf.protocols.training import uses_xla
from cocoop_tf.protocols.published import BASE_TO_NEW
from cocoop_tf.protocols.published import CROSS_DATASET
from cocoop_tf.protocols.published import DOMAIN_GENERALIZATION
from real_layouts import REAL_CLASSNAMES
from real_layouts import TEST_ONLY
from real_layouts import write_all_real_layouts
from test_data_helpers import write_class_folders

TESTS = pathlib.Path(__file__).parent
FAST = dict(backbone="random_tiny", shots=2, epochs=2, batch_size=2, eval_batch_size=8)
TINY = dict(backbone="random_tiny", shots=1, epochs=2, batch_size=2, eval_batch_size=16, seeds=[1])
ELEVEN = [name for name in REAL_CLASSNAMES if name not in TEST_ONLY]


def cleaned(name):
    """The dataset's class names as the results hold them (what the paper prints)."""
    return [n.replace("_", " ") for n in REAL_CLASSNAMES[name]]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """All eleven datasets and the four ImageNet shift sets in their real layouts."""
    return write_all_real_layouts(str(tmp_path_factory.mktemp("data")), counts=(2, 2, 2))


def cli(*args, env=None, **kwargs):
    return subprocess.run(
        ["cocoop-tf", *map(str, args)], capture_output=True, text=True,
        env={**user_environment(), **(env or {})}, **kwargs,
    )


def recount(folder, results):
    """Checks every run's accuracies and the summary against the saved predictions."""
    recounted = {}
    for run in results["runs"]:
        for key, relative in run["predictions"].items():
            labels, predicted, classnames = load_predictions(os.path.join(folder, relative))
            assert classnames == results["classes"][key]
            assert labels.max() < len(classnames)
            accuracy = 100.0 * np.mean(labels == predicted)
            assert run["accuracy"][key] == pytest.approx(accuracy, abs=1e-9)
            recounted.setdefault(run["method"], {}).setdefault(key, []).append(accuracy)
    for method, per_key in recounted.items():
        for key, values in per_key.items():
            assert results["summary"][method][key]["mean"] == pytest.approx(np.mean(values))
            assert results["summary"][method][key]["std"] == pytest.approx(np.std(values))
    return recounted


def check_reports(folder, results):
    with open(os.path.join(folder, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    values = {(r["method"], r["seed"], r["evaluation"]): float(r["accuracy"]) for r in rows}
    for run in results["runs"]:
        seed = "" if run["seed"] is None else str(run["seed"])
        for key, accuracy in run["accuracy"].items():
            assert values[(run["method"], seed, key)] == pytest.approx(accuracy, abs=1e-4)
    png = tf.io.decode_png(tf.io.read_file(os.path.join(folder, "results.png")))
    assert png.shape[0] > 200 and png.shape[1] > 300
    table = open(os.path.join(folder, "results.md")).read()
    assert table.count("\n| ") >= 1 + len(results["summary"])
    return table


# --- the three protocols ------------------------------------------------------------


def test_base2new_two_seeds_from_the_command_line(data_root, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "shots: 2\nepochs: 3\nbatch-size: 2\neval_batch_size: 8\nbackbone: random_tiny\n"
        "crop-scale: [0.5, 1]\nflip: false\n"
    )
    output = tmp_path / "run"
    result = cli(
        "base2new", "--dataset", "oxford_pets", "--data-root", data_root, "--config", config,
        "--epochs", 2, "--seeds", 1, 2, "--no-flip", "--output", output,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())

    assert results["format"] == "cocoop_tf.results/1" and results["protocol"] == "base2new"
    assert results["source"] == "oxford_pets" and results["evaluations"] == ["base", "new"]
    # Real names (american_bulldog) are compared, stored and printed cleaned.
    assert results["classes"] == {"base": cleaned("oxford_pets")[:3], "new": cleaned("oxford_pets")[3:]}
    assert results["config"]["epochs"] == 2  # the flag overrides the file
    assert results["config"]["shots"] == 2 and results["config"]["lr"] is None  # file; default: each paper's
    assert [RunConfig(**results["config"]).for_method(m).lr for m in ("coop", "cocoop")] == [0.002, 0.002]
    assert results["config"]["crop_scale"] == [0.5, 1.0] and results["config"]["flip"] is False
    assert results["versions"]["tensorflow"] == tf.__version__
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [
        ("zeroshot", None), ("coop", 1), ("coop", 2), ("cocoop", 1), ("cocoop", 2)
    ]
    recounted = recount(output, results)
    for run in results["runs"]:
        base, new = run["accuracy"]["base"], run["accuracy"]["new"]
        assert run["h"] == pytest.approx(0 if base + new == 0 else 2 * base * new / (base + new))
    for method, summary in results["summary"].items():
        base, new = np.mean(recounted[method]["base"]), np.mean(recounted[method]["new"])
        assert summary["h"]["of_means"] == pytest.approx(0 if base + new == 0 else 2 * base * new / (base + new))
    assert results["published"]["cocoop"] == dict(zip(("base", "new", "h"), BASE_TO_NEW["oxford_pets"]["cocoop"]))

    table = check_reports(output, results)
    assert "| CoCoOp (paper) | 95.20 | 97.69 | 96.43 |" in table
    for method in ("coop", "cocoop"):
        for seed in (1, 2):
            run_dir = output / "runs" / f"{method}_seed{seed}"
            assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
                "epoch_001.optimizer.safetensors", "epoch_001.safetensors",
                "epoch_002.optimizer.safetensors", "epoch_002.safetensors",
            ]
            final = load_file(run_dir / "prompt.safetensors")
            last = load_file(run_dir / "checkpoints" / "epoch_002.safetensors")
            assert final.keys() == last.keys() and all(np.array_equal(final[k], last[k]) for k in final)
            assert list((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    # The few-shot choice is recorded, and base-to-new trains on base classes only.
    split = json.loads((output / "splits" / "oxford_pets_shot_2-seed_1.json").read_text())
    assert len(split["train"]) == 2 * len(REAL_CLASSNAMES["oxford_pets"])
    assert {row[2] for row in split["train"]} == set(REAL_CLASSNAMES["oxford_pets"])  # CoOp's raw form
    assert "training on 2 shots of 3 base classes" in result.stdout

    # The same folder refuses another run and a repeat without --resume; nothing changes.
    before = (output / "results.json").read_bytes()
    other = cli("base2new", "--dataset", "oxford_pets", "--data-root", data_root, "--config", config,
                "--epochs", 3, "--seeds", 1, 2, "--output", output)
    assert other.returncode == 2 and "holds another run (different config.epochs)" in other.stderr
    again = cli("base2new", "--dataset", "oxford_pets", "--data-root", data_root, "--config", config,
                "--epochs", 2, "--seeds", 1, 2, "--output", output)
    assert again.returncode == 2 and "Pass --resume" in again.stderr
    assert "Traceback" not in other.stderr + again.stderr
    assert (output / "results.json").read_bytes() == before

    # Resuming a finished run keeps every part and rewrites the same numbers.
    resumed = cli("base2new", "--dataset", "oxford_pets", "--data-root", data_root, "--config", config,
                  "--epochs", 2, "--seeds", 1, 2, "--output", output, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("done before, kept") == 5
    assert json.loads((output / "results.json").read_text())["runs"] == results["runs"]

    # A prompt checkpoint evaluates on its own through `evaluate`.
    evaluated = cli(
        "evaluate", "--dataset", "oxford_pets", "--subset", "new", "--data-root", data_root,
        "--backbone", "random_tiny", "--prompts", output / "runs" / "cocoop_seed1" / "prompt.safetensors",
        "--output", tmp_path / "evaluate",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    alone = json.loads((tmp_path / "evaluate" / "results.json").read_text())
    cocoop_seed1 = next(r for r in results["runs"] if (r["method"], r["seed"]) == ("cocoop", 1))
    assert alone["runs"][0]["accuracy"]["oxford_pets"] == cocoop_seed1["accuracy"]["new"]


@pytest.mark.parametrize("name", ELEVEN)
def test_base2new_on_every_dataset_in_its_real_layout(data_root, tmp_path, name):
    results = run_protocol(
        "base2new", RunConfig(**TINY, data_root=data_root), tmp_path, source=name, subset="base",
        evaluations=[(name, "base"), (name, "new")], log=lambda *a: None,
    )
    half = -(-len(REAL_CLASSNAMES[name]) // 2)
    assert results["classes"] == {"base": cleaned(name)[:half], "new": cleaned(name)[half:]}
    assert [r["method"] for r in results["runs"]] == ["zeroshot", "coop", "cocoop"]
    recount(tmp_path, results)
    paper = dict(zip(("base", "new", "h"), BASE_TO_NEW[name]["cocoop"]))
    assert results["published"]["cocoop"] == paper
    assert "| CoCoOp (paper) | " + " | ".join(f"{paper[k]:.2f}" for k in ("base", "new", "h")) in check_reports(tmp_path, results)


def test_all_seven_methods_base2new_kgcoop_guided_by_the_dataset_template(data_root, tmp_path):
    methods = ["zeroshot", "coop", "cocoop", "kgcoop", "maple", "ivlp", "promptsrc"]
    config = RunConfig(**TINY, methods=methods, prompt_depth=2, data_root=data_root)
    results = run_protocol(
        "base2new", config, tmp_path, source="oxford_pets", subset="base",
        evaluations=[("oxford_pets", "base"), ("oxford_pets", "new")], log=lambda *a: None,
    )
    assert [r["method"] for r in results["runs"]] == methods
    recount(tmp_path, results)
    report = check_reports(tmp_path, results)
    for name in ("KgCoOp", "MaPLe", "IVLP", "PromptSRC"):
        assert f"| {name} |" in report, name
    # Each method's published row, and where it comes from (IVLP's paper gives its average alone).
    assert "| KgCoOp (paper) | 94.65 | 97.76 | 96.18 |" in report
    assert "| MaPLe (paper) | 95.43 | 97.76 | 96.58 |" in report
    assert "| PromptSRC (paper) | 95.33 | 97.30 | 96.30 |" in report
    assert "| IVLP (paper) |" not in report
    assert (
        "mean of 3 seeds: CLIP, CoOp and CoCoOp from the CoCoOp paper; KgCoOp from the KgCoOp paper "
        "(Yao et al., CVPR 2023); MaPLe from the MaPLe paper (Khattak et al., CVPR 2023); PromptSRC from "
        "the PromptSRC paper (Khattak et al., ICCV 2023)."
    ) in report
    assert "MaPLe: 1 shots, 2 epochs, batch size 2, lr 0.0035, context 'a photo of a' (2 vectors), depth 2;" in report
    ivlp_line = "1 shots, 2 epochs, batch size 2, lr 0.0025, context 'a photo of a', 4 vision vectors, depth 2 in both towers"
    assert f"IVLP: {ivlp_line}; PromptSRC: {ivlp_line}, L1 weights 25 (text) and 10 (image), GPA mean 15 std 1;" in report
    _, metadata = read_prompt(tmp_path / "runs" / "maple_seed1" / "prompt.safetensors")
    assert (metadata["config"]["n_ctx"], metadata["config"]["prompt_depth"]) == (2, 2)
    prompt = tmp_path / "runs" / "kgcoop_seed1" / "prompt.safetensors"
    _, metadata = read_prompt(prompt)
    assert metadata["config"]["template"] == "a photo of a {}, a type of pet."
    assert metadata["config"]["kg_weight"] == 8.0
    # It learned: the context left the "a photo of a" embeddings it started from.
    clip = load_clip("random_tiny")
    start = cocoop_tf.KgCoOp(clip, ["x"]).prompt_learner.ctx
    assert not np.allclose(load_file(prompt)["prompt_learner/ctx"], start, atol=1e-6)
    # IVLP and PromptSRC: prompts of their own in both towers, all of which learned.
    for method, extra in (("ivlp", {}), ("promptsrc", {"text_loss_weight": 25.0, "image_loss_weight": 10.0,
                                                       "gpa_mean": 15.0, "gpa_std": 1.0})):
        prompt = tmp_path / "runs" / f"{method}_seed1" / "prompt.safetensors"
        _, metadata = read_prompt(prompt)
        recorded = {k: metadata["config"][k] for k in ("n_ctx", "prompt_depth", "n_ctx_vision", "vision_prompt_depth", *extra)}
        assert recorded == {"n_ctx": 4, "prompt_depth": 2, "n_ctx_vision": 4, "vision_prompt_depth": 2, **extra}
        learned = load_file(prompt)
        first = load_file(prompt.parent / "checkpoints" / "epoch_001.safetensors")  # after the warm-up epoch
        assert sorted(learned) == sorted(first) == [
            "prompt_learner/ctx", "prompt_learner/deep_ctx", "prompt_learner/deep_vision_ctx", "prompt_learner/vision_ctx"
        ]
        for name in learned:
            assert not np.allclose(learned[name], first[name], atol=1e-6), (method, name)


def test_cross_dataset_from_imagenet_to_the_ten_others(data_root, tmp_path):
    import matplotlib

    targets = [name for name in ELEVEN if name != "imagenet"]
    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # stands for a notebook's inline backend
    try:
        results = run_protocol(
            "cross-dataset", RunConfig(**TINY, methods=["zeroshot", "cocoop"], data_root=data_root),
            tmp_path, source="imagenet",
            evaluations=[("imagenet", "all")] + [(t, "all") for t in targets], log=lambda *a: None,
        )
        assert matplotlib.get_backend() == "svg"  # writing results.png left the backend alone
    finally:
        matplotlib.use(previous)
    assert results["evaluations"] == ["imagenet", *targets] and results["targets"] == targets
    assert results["classes"] == {name: cleaned(name) for name in ["imagenet", *targets]}
    recounted = recount(tmp_path, results)
    for method in ("zeroshot", "cocoop"):
        assert results["summary"][method]["average"]["mean"] == pytest.approx(
            np.mean([np.mean(recounted[method][t]) for t in targets])
        )
    assert results["published"]["cocoop"] == CROSS_DATASET["cocoop"]
    table = check_reports(tmp_path, results)
    assert "| Method | imagenet | caltech101 | oxford_pets |" in table
    assert "| CoCoOp (paper) | 71.02 | 94.43 | 90.14 |" in table
    # The CoCoOp prompt was trained on all ImageNet classes.
    split = json.loads((tmp_path / "splits" / "imagenet_shot_1-seed_1.json").read_text())
    assert sorted({row[2] for row in split["train"]}) == sorted(REAL_CLASSNAMES["imagenet"])


def test_domain_generalization_to_the_four_shift_sets(data_root, tmp_path):
    results = run_protocol(
        "domain-generalization", RunConfig(**TINY, methods=["zeroshot", "coop"], data_root=data_root),
        tmp_path, source="imagenet",
        evaluations=[("imagenet", "all")] + [(name, "all") for name in TEST_ONLY], log=lambda *a: None,
    )
    assert results["evaluations"] == ["imagenet", *TEST_ONLY]
    # ImageNet-A and -R hold a subset of the classes, relabelled from 0.
    assert results["classes"] == {name: cleaned(name) for name in ["imagenet", *TEST_ONLY]}
    assert len(results["classes"]["imagenet_a"]) < len(results["classes"]["imagenet"])
    recount(tmp_path, results)
    assert results["published"]["coop"] == DOMAIN_GENERALIZATION["coop"]
    assert "| CoOp (paper) | 71.51 | 64.20 | 47.99 | 49.71 | 75.21 |" in check_reports(tmp_path, results)


def test_train_then_evaluate_a_folder_with_underscore_names(tmp_path):
    """One's own class-per-folder images, trained and evaluated from the command line."""
    names = ["digit_one", "Golden_Retriever", "apple_pie", "t-shirt"]
    write_class_folders(tmp_path / "my_images", {name: 6 for name in names})
    trained = cli(
        "train", "--dataset", tmp_path / "my_images", "--backbone", "random_tiny", "--seeds", 3,
        "--shots", 2, "--epochs", 1, "--warmup-epochs", 0, "--lr", 0.01, "--output", tmp_path / "train",
        preexec_fn=lambda: os.umask(0o022),
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert_quiet(trained)
    results = json.loads((tmp_path / "train" / "results.json").read_text())
    assert results["classes"] == {"my_images": ["Golden Retriever", "apple pie", "digit one", "t-shirt"]}
    recount(tmp_path / "train", results)
    prompt = tmp_path / "train" / "runs" / "cocoop_seed3" / "prompt.safetensors"
    for path in (prompt, tmp_path / "train" / "runs" / "cocoop_seed3" / "checkpoints" / "epoch_001.safetensors"):
        assert oct(path.stat().st_mode & 0o777) == "0o644"  # the user's umask, not private

    evaluated = cli(
        "evaluate", "--dataset", tmp_path / "my_images", "--backbone", "random_tiny",
        "--prompts", prompt, "--output", tmp_path / "evaluate",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert_quiet(evaluated)
    alone = json.loads((tmp_path / "evaluate" / "results.json").read_text())
    recount(tmp_path / "evaluate", alone)
    assert alone["runs"][0]["accuracy"] == results["runs"][0]["accuracy"]
    # results.md states how the prompt was trained, not evaluate's defaults.
    table = (tmp_path / "evaluate" / "results.md").read_text()
    assert "trained on my_images (all classes), seed 3, 2 shots, 1 epochs, batch size 1, lr 0.01" in table
    assert "16 shots" not in table and "10 epochs" not in table


# --- resume and distribution ------------------------------------------------------------


def _script(*args):
    return subprocess.run([sys.executable, TESTS / "protocol_scripts.py", *map(str, args)],
                          capture_output=True, text=True)


def test_killed_and_damaged_runs_resume_to_the_same_weights(data_root, tmp_path):
    whole = _script("resume", data_root, tmp_path / "whole", "none")
    assert whole.returncode == 0, whole.stderr[-3000:]
    final = load_file(tmp_path / "whole" / "runs" / "cocoop_seed1" / "prompt.safetensors")
    # What resume needs is kept, the newest two epochs, not every epoch's.
    checkpoints = tmp_path / "whole" / "runs" / "cocoop_seed1" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "epoch_002.optimizer.safetensors", "epoch_002.safetensors",
        "epoch_003.optimizer.safetensors", "epoch_003.safetensors",
    ]
    second = load_file(checkpoints / "epoch_002.safetensors")
    assert any(not np.array_equal(second[k], final[k]) for k in final)  # epoch 3 did train

    def same_as_whole(folder):
        prompt = load_file(folder / "runs" / "cocoop_seed1" / "prompt.safetensors")
        assert prompt.keys() == final.keys()
        for name in final:
            np.testing.assert_array_equal(prompt[name], final[name], err_msg=name)

    # SIGKILL while epoch 3's checkpoint is half written; then, as an older version or another
    # tool might leave them, an empty run.json and a truncated few-shot record and epoch 2.
    cut = tmp_path / "cut"
    killed = _script("resume", data_root, cut, "kill_in_checkpoint_3")
    assert killed.returncode == -9, killed.stderr[-3000:]
    (cut / "run.json").write_text("")
    record = cut / "splits" / "oxford_pets_shot_2-seed_1.json"
    record.write_bytes(record.read_bytes()[:40])
    epoch_2 = cut / "runs" / "cocoop_seed1" / "checkpoints" / "epoch_002.safetensors"
    epoch_2.write_bytes(epoch_2.read_bytes()[:100])
    resumed = _script("resume", data_root, cut, "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "run.json was damaged; written again" in resumed.stdout
    assert "oxford_pets_shot_2-seed_1.json is damaged" in resumed.stderr
    assert "epoch_002.safetensors (or its optimizer file) is damaged" in resumed.stdout
    assert "resumed after epoch 1" in resumed.stdout
    same_as_whole(cut)

    # SIGKILL while result.json is written: the run is evaluated again, not trained again.
    late = tmp_path / "late"
    killed = _script("resume", data_root, late, "kill_writing_result")
    assert killed.returncode == -9 and not (late / "runs" / "cocoop_seed1" / "result.json").exists()
    resumed = _script("resume", data_root, late, "resume")
    assert resumed.returncode == 0 and "resumed after epoch 3" in resumed.stdout, resumed.stderr[-3000:]
    assert "left half-written by a killed process" in resumed.stdout  # result.json's staging file
    assert not [p for p in late.rglob(".*.partial")]
    same_as_whole(late)
    accuracy = json.loads((late / "results.json").read_text())["runs"][0]["accuracy"]
    assert accuracy == json.loads((tmp_path / "whole" / "results.json").read_text())["runs"][0]["accuracy"]
    # A truncated result.json of a finished run: evaluated again, the same numbers.
    result = late / "runs" / "cocoop_seed1" / "result.json"
    result.write_bytes(result.read_bytes()[:10])
    again = _script("resume", data_root, late, "resume")
    assert again.returncode == 0 and "result.json is damaged; evaluating this run again" in again.stdout
    assert json.loads(result.read_text())["accuracy"] == accuracy


def test_an_interrupted_evaluation_predicts_only_its_unfinished_shards(data_root, tmp_path, monkeypatch):
    from cocoop_tf import CoCoOp
    from cocoop_tf.data.dataset import ImageDataset
    from cocoop_tf.protocols.evaluation import predict_split

    view = load_dataset("oxford_pets", data_root)
    model = CoCoOp(load_clip("random_tiny"), view.classnames)
    for variable in model.trainable_variables:  # an untrained model gives every image one class
        variable.assign(np.random.default_rng(0).normal(0, 1, variable.shape))
    items = view.items("test")
    reference = np.argmax(model.predict(view.to_tf_dataset("test", 3, training=False, image_size=32)
                                        .map(lambda x, y: x), verbose=0), axis=-1)
    assert len(set(reference)) > 1
    shards = tmp_path / "shards"
    lines = []
    labels, predicted = predict_split(model, view, "test", 2, 32, shard_size=3, shard_dir=shards, log=lines.append)
    np.testing.assert_array_equal(predicted, reference)  # shards of 4 (whole batches of 2): 3 of them
    np.testing.assert_array_equal(labels, [item.label for item in items])
    assert sorted(os.listdir(shards)) == ["00000000-00000004.npy", "00000004-00000008.npy", "00000008-00000010.npy"]
    assert lines[-1].startswith("    10/10 images, ") and lines[-1].endswith(" left")

    # Interrupted: one shard never written, one cut short (a full disk); only those two run again.
    (shards / "00000004-00000008.npy").unlink()
    last = shards / "00000008-00000010.npy"
    last.write_bytes(last.read_bytes()[:20])
    read = []
    to_tf_dataset = ImageDataset.to_tf_dataset

    def recording(self, *args, items=None, **kwargs):
        read.extend(items)
        return to_tf_dataset(self, *args, items=items, **kwargs)

    monkeypatch.setattr(ImageDataset, "to_tf_dataset", recording)
    _, again = predict_split(model, view, "test", 2, 32, shard_size=3, shard_dir=shards, log=lines.append)
    np.testing.assert_array_equal(again, reference)
    assert read == items[4:]
    # Shards of another size are not taken for finished ones.
    read.clear()
    _, other = predict_split(model, view, "test", 5, 32, shard_size=5, shard_dir=shards, log=lines.append)
    np.testing.assert_array_equal(other, reference)
    assert read == items


def test_a_folder_in_use_is_refused_and_a_dead_holder_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, TESTS / "protocol_scripts.py", "hold", "-", tmp_path / "run", "-"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(RunFolderError, match=rf"in use by another process \(process {holder.pid} on "):
            RunFolder(tmp_path / "run", {"held": True}, resume=True, log=lambda *a: None)
        holder.send_signal(signal.SIGSTOP)  # stopped (Ctrl-Z), not dead: it may go on
        with pytest.raises(RunFolderError, match="in use by another process"):
            RunFolder(tmp_path / "run", {"held": True}, resume=True, log=lambda *a: None)
    finally:
        holder.kill()  # SIGKILL: the lock is never released by the holder itself
        holder.wait()
    lines = []
    folder = RunFolder(tmp_path / "run", {"held": True}, resume=True, log=lines.append)
    folder.close()
    assert lines == [f"Taking over {tmp_path / 'run' / '.lock'} from process {holder.pid} on "
                     f"{socket.gethostname()}, which is no longer running"]


def test_two_replicas_and_two_workers_train_and_evaluate_as_one_device(data_root, tmp_path, monkeypatch):
    """MirroredStrategy on two CPUs (four methods), then two worker processes training PromptSRC
    (one killed after epoch 2, then resumed: the chief's weights, optimizer and aggregation sums
    reach the other worker). CoCoOp across workers is test_workers.py's."""
    result = _script("mirrored", data_root, tmp_path, "")  # CoCoOp, KgCoOp, MaPLe and PromptSRC
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica(s)" in result.stdout and "1 replica(s)" in result.stdout

    def same_as_one_device(folder, method="cocoop"):
        run = pathlib.Path("runs") / f"{method}_seed1"
        one = load_file(tmp_path / "one" / run / "prompt.safetensors")
        start = load_file(tmp_path / "one" / run / "checkpoints" / "epoch_001.safetensors")
        assert any(not np.allclose(start[k], one[k]) for k in one), method  # training moved the weights
        prompt = load_file(folder / run / "prompt.safetensors")
        for name in one:  # equal up to the order of float sums across replicas
            assert np.max(np.abs(prompt[name] - one[name])) <= 1e-5 * np.max(np.abs(one[name])), (method, name)
        predictions = np.load(tmp_path / "one" / run / "predictions" / "oxford_pets.npz")
        sharded = np.load(folder / run / "predictions" / "oxford_pets.npz")
        for name in ("labels", "predicted", "classnames"):
            np.testing.assert_array_equal(sharded[name], predictions[name], err_msg=f"{method} {name}")
        assert not (folder / run / "predictions" / "oxford_pets.shards").exists()
        return predictions

    predictions = same_as_one_device(tmp_path / "two")
    assert len(set(predictions["predicted"])) > 1  # a comparison that could fail
    for method in ("kgcoop", "maple", "promptsrc"):  # their loss terms counted once across replicas
        same_as_one_device(tmp_path / "two", method)

    # Two workers on loopback; worker 1 writes into a folder of its own, which must stay empty.
    ports = ",".join(map(str, free_ports(2)))

    def workers(option):
        chief = subprocess.Popen(
            [sys.executable, TESTS / "protocol_scripts.py", "worker0", data_root, tmp_path / "cluster", option],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        other = _script("worker1", data_root, tmp_path / "worker1", option)
        out, err = chief.communicate(timeout=300)
        return subprocess.CompletedProcess(chief.args, chief.returncode, out, err), other

    monkeypatch.setenv("COCOOP_TEST_PROMPTS", str(tmp_path / "trained"))  # what each worker trained
    (tmp_path / "trained").mkdir()
    chief, other = workers(ports + ",promptsrc,die")
    assert other.returncode == -9, other.stderr[-3000:]
    assert chief.returncode != 0 and "Lost contact with worker 1 of the cluster" in chief.stderr, chief.stderr[-3000:]
    assert "start every worker again with the same command and --resume" in chief.stderr
    assert not list((tmp_path / "trained").iterdir())  # worker 1 died in epoch 2
    chief, other = workers(ports + ",promptsrc")
    assert chief.returncode == 0 and other.returncode == 0, chief.stderr[-3000:] + other.stderr[-3000:]
    assert "2 replica(s)" in chief.stdout and "PromptSRC, seed 1\n  training on" in chief.stdout
    assert "resumed after epoch 2" in chief.stdout and "resumed after epoch 2 from the chief" in other.stdout
    assert "retracing" not in chief.stderr + other.stderr  # gathering shards traces once
    same_as_one_device(tmp_path / "cluster", "promptsrc")  # its weights decide: it predicts one class
    # Worker 1 ended with the chief's aggregated prompt: it started epoch 3 from the chief's sums.
    mine = {w: load_file(tmp_path / "trained" / f"promptsrc_worker{w}.safetensors") for w in (0, 1)}
    for name in mine[0]:
        np.testing.assert_array_equal(mine[1][name], mine[0][name], err_msg=name)
    assert not (tmp_path / "worker1").exists()  # only the chief writes


# --- bad input ---------------------------------------------------------------------------


def test_missing_data_root_is_a_clear_error(tmp_path, monkeypatch, cli_here):
    monkeypatch.delenv("COCOOP_TF_DATA", raising=False)
    result = cli_here("base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny",
                      "--output", tmp_path / "out", env={"COCOOP_TF_DATA": ""})
    assert result.returncode == 2 and "needs data_root (--data-root)," in result.stderr
    missing = cli_here("base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny",
                       "--data-root", tmp_path / "nowhere", "--output", tmp_path / "out")
    assert missing.returncode == 2 and "oxford_pets" in missing.stderr
    assert "Traceback" not in result.stderr + missing.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_dataset_and_bad_settings(data_root, tmp_path, cli_here):
    result = cli_here("base2new", "--dataset", "oxford_petz", "--backbone", "random_tiny",
                      "--data-root", data_root, "--output", tmp_path / "out")
    assert result.returncode == 2 and "unknown dataset 'oxford_petz'; did you mean oxford_pets?" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    bad = cli_here("base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny", "--n-ctx", 16,
                   "--data-root", data_root, "--output", tmp_path / "out")
    assert bad.returncode == 2 and "set n_ctx to 4, or ctx_init to none" in bad.stderr
    config = tmp_path / "c.json"
    config.write_text('{"epoch": 3}')
    typo = cli_here("train", "--dataset", "oxford_pets", "--backbone", "random_tiny", "--config", config,
                    "--data-root", data_root, "--output", tmp_path / "out")
    assert typo.returncode == 2 and "Unknown setting 'epoch'" in typo.stderr
    csc = cli_here("base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny", "--class-specific",
                   "--methods", "coop", "--data-root", data_root, "--output", tmp_path / "out")
    assert csc.returncode == 2 and "cannot be evaluated on other classes" in csc.stderr
    crop = cli_here("base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny", "--crop-scale", 0.8, 0.2,
                    "--data-root", data_root, "--output", tmp_path / "out")
    assert crop.returncode == 2 and "crop_scale must be [low, high]" in crop.stderr
    assert "Traceback" not in result.stderr + bad.stderr + typo.stderr + csc.stderr + crop.stderr
    with pytest.raises(ValueError, match='jit_compile must be true, false or "auto"'):
        RunConfig(backbone="random_tiny", jit_compile="yes")
    assert not (tmp_path / "out").exists()


def test_each_method_trains_with_its_papers_settings_unless_told():
    paper = RunConfig(backbone="random_tiny", methods=["coop", "kgcoop"])
    assert [(paper.for_method(m).epochs, paper.for_method(m).batch_size) for m in paper.methods] == [(10, 1), (100, 128)]
    given = RunConfig(backbone="random_tiny", methods=["coop", "kgcoop"], epochs=3)
    assert [(given.for_method(m).epochs, given.for_method(m).batch_size) for m in given.methods] == [(3, 1), (3, 128)]
    maple = RunConfig(backbone="random_tiny", methods=["coop", "maple"]).for_method("maple")
    assert (maple.epochs, maple.batch_size, maple.lr, maple.n_ctx, maple.prompt_depth) == (5, 4, 0.0035, 2, 9)
    assert RunConfig(backbone="random_tiny", methods=["coop"]).for_method("coop").lr == 0.002
    with pytest.raises(ValueError, match="set n_ctx to 4, or ctx_init to none"):
        RunConfig(backbone="random_tiny", methods=["coop", "maple"], n_ctx=2)  # CoOp learns every word
    assert RunConfig(backbone="random_tiny", methods=["maple"], n_ctx=3).for_method("maple").n_ctx == 3
    with pytest.raises(ValueError, match="cannot start 5 context vectors"):
        RunConfig(backbone="random_tiny", methods=["maple"], n_ctx=5)
    results = {"protocol": "base2new", "runs": [{"method": "kgcoop", "seed": 1}], "config": paper.to_dict()}
    assert "CoOp: 16 shots, 10 epochs, batch size 1, lr 0.002, context 'a photo of a'; KgCoOp: 16 shots, 100 epochs, batch size 128" in _settings_lines(results)[0]


def test_xla_by_default_for_clip_sized_text_towers():
    """jit_compile "auto": XLA from CLIP's 512-wide text tower up, where it pays on CPU."""
    tiny = build_backbone(RANDOM_CONFIGS["random_tiny"])
    clip_sized = build_backbone(dataclasses.replace(
        RANDOM_CONFIGS["random_tiny"], text_width=512, text_heads=8, text_layers=1, text_mlp_width=512,
    ))
    assert [uses_xla("auto", tiny), uses_xla("auto", clip_sized)] == [False, True]
    assert [uses_xla(True, tiny), uses_xla(False, clip_sized)] == [True, False]


def test_prompt_from_another_backbone_width(data_root, tmp_path):
    prompt = tmp_path / "wide.safetensors"
    made = subprocess.run(
        [sys.executable, TESTS / "protocol_scripts.py", "wide_prompt", data_root, prompt, ""],
        capture_output=True, text=True,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    result = cli("evaluate", "--dataset", "oxford_pets", "--data-root", data_root,
                 "--backbone", "random_tiny", "--prompts", prompt, "--output", tmp_path / "out")
    assert result.returncode == 2 and "ctx_dim is 48 but this model's is 64" in result.stderr
    assert "Traceback" not in result.stderr


def test_output_folder_with_other_files_is_refused(data_root, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty and holds no cocoop-tf run"):
        run_protocol("evaluate", RunConfig(**FAST, methods=["zeroshot"], data_root=data_root),
                     tmp_path, evaluations=[("oxford_pets", "all")], log=lambda *a: None)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_data_problems_stop_the_run_before_it_starts(data_root, tmp_path):
    images = tmp_path / "my_images"
    write_class_folders(images, {"cat_one": 6, "cat_two": 6})
    truncated = pathlib.Path(load_dataset(images).test[-1].path)
    truncated.write_bytes(truncated.read_bytes()[:60])  # an interrupted copy
    arguments = ["train", "--dataset", images, "--backbone", "random_tiny", "--seeds", 1, "--shots", 1,
                 "--epochs", 1, "--warmup-epochs", 0]
    result = cli(*arguments, "--output", tmp_path / "stopped")
    assert_quiet(result)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"Corrupt image {truncated} (truncated JPEG)" in result.stderr and "--skip-corrupt" in result.stderr
    assert not (tmp_path / "stopped").exists()  # before any file or training

    skipped = cli(*arguments, "--skip-corrupt", "--output", tmp_path / "skipped")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert f"skipping corrupt image {truncated} (truncated JPEG) in the test split of my_images" in skipped.stdout
    results = json.loads((tmp_path / "skipped" / "results.json").read_text())
    labels, _, _ = load_predictions(tmp_path / "skipped" / results["runs"][0]["predictions"]["my_images"])
    assert len(labels) == 2 * 2 - 1  # test: 2 images per class, less the corrupt one

    # A split file that names files the folder lacks.
    pets = tmp_path / "data" / "oxford_pets"
    shutil.copytree(os.path.join(data_root, "oxford_pets"), pets)
    missing = next((pets / "images").glob("*.jpg"))
    missing.unlink()
    lost = cli("base2new", "--dataset", "oxford_pets", "--data-root", tmp_path / "data",
               "--backbone", "random_tiny", "--output", tmp_path / "lost")
    assert lost.returncode == 2 and len(lost.stderr.strip().splitlines()) == 1
    assert "split_zhou_OxfordPets.json lists 1 image file(s) that are missing" in lost.stderr
    assert str(missing) in lost.stderr
    assert not (tmp_path / "lost").exists()


def test_class_names_the_backbone_cannot_take_stop_before_the_run_folder(tmp_path):
    write_class_folders(tmp_path / "pets", {"golden_retriever": 4, "tabby_cat": 4})
    result = cli("train", "--dataset", tmp_path / "pets", "--backbone", "mini_clip", "--output", tmp_path / "out")
    assert_quiet(result)
    assert result.returncode == 2 and "'golden retriever' has tokens it never learned" in result.stderr
    assert not (tmp_path / "out").exists()  # the same command with a real CLIP can use the folder
