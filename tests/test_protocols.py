"""The experiment runner end to end on tiny CoOp-layout datasets (random_tiny backbone).

Results files are checked against the documented schema, and every number in
them is recomputed here from the saved predictions.
"""

import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file

from cocoop_tf.protocols import RunConfig
from cocoop_tf.protocols import RunFolderError
from cocoop_tf.protocols import load_predictions
from cocoop_tf.protocols import run_protocol
from cocoop_tf.protocols.published import BASE_TO_NEW
from cocoop_tf.protocols.published import DOMAIN_GENERALIZATION
from protocol_fixtures import CALTECH
from protocol_fixtures import PETS
from protocol_fixtures import write_coop_data_root

TESTS = pathlib.Path(__file__).parent
FAST = dict(backbone="random_tiny", shots=2, epochs=2, batch_size=2, eval_batch_size=8)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_coop_data_root(str(tmp_path_factory.mktemp("data")))


def cli(*args, env=None):
    return subprocess.run(
        ["cocoop-tf", *map(str, args)], capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
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
    assert results["classes"] == {"base": PETS[:3], "new": PETS[3:]}
    assert results["config"]["epochs"] == 2  # the flag overrides the file
    assert results["config"]["shots"] == 2 and results["config"]["lr"] == 0.002  # file, default
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
    assert len(split["train"]) == 2 * len(PETS)
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


def test_cross_dataset_transfer(data_root, tmp_path):
    import matplotlib

    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # stands for a notebook's inline backend
    try:
        config = RunConfig(**FAST, methods=["zeroshot", "cocoop"], seeds=[1], data_root=data_root)
        results = run_protocol(
            "cross-dataset", config, tmp_path, source="caltech101",
            evaluations=[("caltech101", "all"), ("oxford_pets", "all")], log=lambda *a: None,
        )
        assert matplotlib.get_backend() == "svg"  # writing results.png left the backend alone
    finally:
        matplotlib.use(previous)
    assert results["evaluations"] == ["caltech101", "oxford_pets"]
    assert results["targets"] == ["oxford_pets"]
    assert results["classes"] == {"caltech101": CALTECH, "oxford_pets": PETS}
    recounted = recount(tmp_path, results)
    for method in ("zeroshot", "cocoop"):
        assert results["summary"][method]["average"]["mean"] == pytest.approx(
            np.mean(recounted[method]["oxford_pets"])
        )
    assert results["published"] is None  # the paper's transfer numbers start from ImageNet
    table = check_reports(tmp_path, results)
    assert "| Method | caltech101 | oxford_pets | Average |" in table
    # The CoCoOp prompt was trained on the four Caltech classes, all of them.
    prompt = load_file(tmp_path / "runs" / "cocoop_seed1" / "prompt.safetensors")
    assert prompt  # written
    split = json.loads((tmp_path / "splits" / "caltech101_shot_2-seed_1.json").read_text())
    assert sorted({row[2] for row in split["train"]}) == CALTECH


def test_domain_generalization_on_imagenet_shifts(data_root, tmp_path):
    config = RunConfig(**FAST, methods=["zeroshot", "coop"], seeds=[1], data_root=data_root)
    results = run_protocol(
        "domain-generalization", config, tmp_path, source="imagenet",
        evaluations=[("imagenet", "all"), ("imagenetv2", "all"), ("imagenet_sketch", "all")],
        log=lambda *a: None,
    )
    assert results["evaluations"] == ["imagenet", "imagenetv2", "imagenet_sketch"]
    assert len(results["classes"]["imagenet"]) == 4 and len(results["classes"]["imagenetv2"]) == 5
    recount(tmp_path, results)
    assert results["published"]["coop"] == DOMAIN_GENERALIZATION["coop"]
    table = check_reports(tmp_path, results)
    assert "| CoOp (paper) | 71.51 | 64.20 | 47.99 |" in table


# --- resume and distribution ------------------------------------------------------------


def test_resume_after_an_interruption_gives_the_same_weights(data_root, tmp_path):
    script = TESTS / "protocol_scripts.py"
    whole = subprocess.run(
        [sys.executable, script, "resume", data_root, tmp_path / "whole", "none"],
        capture_output=True, text=True,
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    cut = subprocess.run(
        [sys.executable, script, "resume", data_root, tmp_path / "cut", "after_epoch_1"],
        capture_output=True, text=True,
    )
    assert cut.returncode == 3, cut.stderr[-3000:]  # interrupted
    assert not (tmp_path / "cut" / "runs" / "cocoop_seed1" / "prompt.safetensors").exists()
    resumed = subprocess.run(
        [sys.executable, script, "resume", data_root, tmp_path / "cut", "resume"],
        capture_output=True, text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed after epoch 1" in resumed.stdout
    a = load_file(tmp_path / "whole" / "runs" / "cocoop_seed1" / "prompt.safetensors")
    b = load_file(tmp_path / "cut" / "runs" / "cocoop_seed1" / "prompt.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    first = load_file(tmp_path / "whole" / "runs" / "cocoop_seed1" / "checkpoints" / "epoch_001.safetensors")
    assert any(not np.array_equal(first[k], a[k]) for k in a)  # epochs 2-3 did train


def test_mirrored_strategy_on_two_cpus_matches_one_device(data_root, tmp_path):
    result = subprocess.run(
        [sys.executable, TESTS / "protocol_scripts.py", "mirrored", data_root, tmp_path, ""],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica(s)" in result.stdout and "1 replica(s)" in result.stdout
    one = load_file(tmp_path / "one" / "runs" / "cocoop_seed1" / "prompt.safetensors")
    two = load_file(tmp_path / "two" / "runs" / "cocoop_seed1" / "prompt.safetensors")
    start = load_file(tmp_path / "one" / "runs" / "cocoop_seed1" / "checkpoints" / "epoch_001.safetensors")
    for name in one:  # equal up to the order of float sums across replicas
        assert np.max(np.abs(two[name] - one[name])) <= 1e-5 * np.max(np.abs(one[name])), name
    assert any(not np.allclose(start[k], one[k]) for k in one)  # training moved the weights


# --- bad input ---------------------------------------------------------------------------


def test_missing_data_root_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("COCOOP_TF_DATA", raising=False)
    result = cli("base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny",
                 "--output", tmp_path / "out", env={"COCOOP_TF_DATA": ""})
    assert result.returncode == 2 and "needs data_root=" in result.stderr
    missing = cli("base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny",
                  "--data-root", tmp_path / "nowhere", "--output", tmp_path / "out")
    assert missing.returncode == 2 and "oxford_pets" in missing.stderr
    assert "Traceback" not in result.stderr + missing.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_dataset_and_bad_settings(data_root, tmp_path):
    result = cli("base2new", "--dataset", "oxford_petz", "--backbone", "random_tiny",
                 "--data-root", data_root, "--output", tmp_path / "out")
    assert result.returncode == 2 and "Unknown dataset 'oxford_petz'" in result.stderr
    bad = cli("base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny", "--n-ctx", 16,
              "--data-root", data_root, "--output", tmp_path / "out")
    assert bad.returncode == 2 and "set n_ctx to 4, or ctx_init to none" in bad.stderr
    config = tmp_path / "c.json"
    config.write_text('{"epoch": 3}')
    typo = cli("train", "--dataset", "oxford_pets", "--backbone", "random_tiny", "--config", config,
               "--data-root", data_root, "--output", tmp_path / "out")
    assert typo.returncode == 2 and "Unknown setting 'epoch'" in typo.stderr
    csc = cli("base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny", "--class-specific",
              "--methods", "coop", "--data-root", data_root, "--output", tmp_path / "out")
    assert csc.returncode == 2 and "cannot be evaluated on other classes" in csc.stderr
    crop = cli("base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny", "--crop-scale", 0.8, 0.2,
               "--data-root", data_root, "--output", tmp_path / "out")
    assert crop.returncode == 2 and "crop_scale must be [low, high]" in crop.stderr
    assert "Traceback" not in result.stderr + bad.stderr + typo.stderr + csc.stderr + crop.stderr
    assert not (tmp_path / "out").exists()


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
