"""`cocoop-tf demo`: base-to-new on the mini benchmark, then SavedModel and TFLite, end to end."""

import json
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from conftest import assert_quiet
from conftest import user_environment

from cocoop_tf.demo.demo import DEMO_SETTINGS
from cocoop_tf.protocols import load_predictions


README_RUN = pathlib.Path(__file__).parent.parent / "cocoop_demo"


def test_demo_command_end_to_end(tmp_path):
    output = tmp_path / "demo"
    command = ["cocoop-tf", "demo", "--output", str(output)]
    # CI runs README's first command, `cocoop-tf demo`, in this clone just before the
    # tests: its seven training runs are reused (the demo resumes them), and the
    # export and the new-class check run again. Anywhere else the demo runs whole.
    reuse = os.environ.get("CI") == "true" and (README_RUN / "deployment.json").is_file()
    if reuse:
        shutil.copytree(README_RUN / "base2new", output / "base2new")
    else:
        command += ["--data-root", str(tmp_path / "data")]
    result = subprocess.run(command, capture_output=True, text=True, env=user_environment())
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet(result)
    assert result.stderr == ""
    assert result.stdout.count("done before, kept") == (7 if reuse else 0)
    assert "| Method | Base | New | H |" in result.stdout
    results = json.loads((output / "base2new" / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["zeroshot"] + ["coop"] * 3 + ["cocoop"] * 3
    assert {key: results["config"][key] for key in DEMO_SETTINGS} == DEMO_SETTINGS
    for run in results["runs"]:
        for key, path in run["predictions"].items():
            labels, predicted, _ = load_predictions(output / "base2new" / path)
            assert run["accuracy"][key] == pytest.approx(100 * np.mean(labels == predicted))
    # Prompt learning works on the small CLIP: every seed of CoOp and CoCoOp beats
    # zero-shot CLIP by at least 5 points on the base classes.
    zero_shot = results["runs"][0]["accuracy"]["base"]
    for method in ("coop", "cocoop"):
        base = [r["accuracy"]["base"] for r in results["runs"] if r["method"] == method]
        assert min(base) >= zero_shot + 5, (method, base, zero_shot)
    assert (output / "base2new" / "results.png").stat().st_size > 10_000
    assert (output / "saved_model" / "cocoop" / "1" / "saved_model.pb").exists()
    deployment = json.loads((output / "deployment.json").read_text())
    assert deployment["max_difference_tflite_saved_model"] < 1e-4
    assert list(deployment["SavedModel"]) == list(deployment["TFLite"])  # same top classes
