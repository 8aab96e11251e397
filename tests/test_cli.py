"""The `cocoop-tf` command line, run as users run it."""

import pathlib
import subprocess

import numpy as np
from conftest import assert_quiet
from conftest import user_environment
from test_data_helpers import write_class_folders

import cocoop_tf

SAMPLES = pathlib.Path(cocoop_tf.__file__).parent / "data" / "samples"


def _run(*args):
    return subprocess.run(["cocoop-tf", *args], capture_output=True, text=True)


def test_zeroshot_prints_a_ranked_table_per_image():
    images = [str(SAMPLES / "chelsea.jpg"), str(SAMPLES / "coffee.jpg")]
    result = _run(
        "zeroshot", "--backbone", "random_tiny", "--classnames", "cat", "cup_of_coffee", "dog",
        "--images", *images, "--top-k", "2",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for image in images:
        at = lines.index(image)
        assert lines[at + 1].split() == ["rank", "class", "probability", "logit"]
        ranks = [lines[at + 2].split()[0], lines[at + 3].split()[0]]
        assert ranks == ["1", "2"]
        probabilities = [float(lines[at + k].split()[-2]) for k in (2, 3)]
        assert probabilities[0] >= probabilities[1]
    assert "cup of coffee" in result.stdout  # underscores become spaces


def test_bad_image_is_a_one_line_error(tmp_path, capsys):
    from cocoop_tf.cli import main

    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    assert main(["zeroshot", "--backbone", "random_tiny", "--classnames", "a", "--images", str(broken)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("cocoop-tf zeroshot: error: Cannot decode") and error.count("\n") == 1, error


def test_unknown_backbone_is_a_one_line_error(capsys):
    from cocoop_tf.cli import main

    assert main(["zeroshot", "--backbone", "no_such_clip", "--classnames", "a", "--images", "x.jpg"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("cocoop-tf zeroshot: error: Unknown CLIP source 'no_such_clip'"), error
    assert error.count("\n") == 1, error


# --- the command line as a person meets it --------------------------------------------

def _quiet_run(*args, **kwargs):
    """A command as a user runs it; it prints no start-up line, warning or traceback."""
    result = subprocess.run(
        ["cocoop-tf", *map(str, args)], capture_output=True, text=True, env=user_environment(), **kwargs
    )
    assert_quiet(result)
    return result


def _one_line_error(result, *needles):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cocoop-tf "), result.stderr
    assert all(needle in lines[0] for needle in needles), lines[0]
    return lines[0]


def test_help_is_quiet_and_says_what_each_command_takes():
    top = _quiet_run("--help")
    assert top.returncode == 0 and "base2new" in top.stdout
    zeroshot = _quiet_run("zeroshot", "--help")
    assert "mini_clip" in zeroshot.stdout
    evaluate = _quiet_run("evaluate", "--help")
    assert "--prompts" in evaluate.stdout and "--force" in evaluate.stdout
    for training_flag in ("--epochs", "--lr", "--shots", "--seeds", "--batch-size", "--warmup-epochs"):
        assert training_flag not in evaluate.stdout


def test_one_epoch_names_the_warm_up_flag(tmp_path):
    result = _quiet_run("train", "--dataset", tmp_path, "--backbone", "random_tiny", "--epochs", 1,
                        "--output", tmp_path / "out")
    _one_line_error(result, "--warmup-epochs 0")
    assert not (tmp_path / "out").exists()


def test_full_disk_is_a_one_line_error(tmp_path):
    write_class_folders(tmp_path / "images", {"cat_a": 4, "cat_b": 4})
    disk = tmp_path / "disk"
    disk.mkdir()
    # A 24 kB file system of our own (a user namespace needs no privileges).
    command = (f"mount -t tmpfs -o size=24k tmpfs {disk} && exec cocoop-tf train --dataset "
               f"{tmp_path / 'images'} --backbone random_tiny --seeds 1 --shots 1 --epochs 2 "
               f"--output {disk / 'run'}")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True, text=True,
                            env=user_environment())
    assert_quiet(result)
    _one_line_error(result, "No space left on the device", "--resume")


def test_prompt_file_without_class_names_is_a_one_line_error(tmp_path):
    from safetensors.numpy import save_file

    write_class_folders(tmp_path / "images", {"a": 4, "b": 4})
    save_file({"prompt_learner/ctx": np.zeros((4, 64), np.float32)}, str(tmp_path / "p.safetensors"),
              metadata={"format": "cocoop_tf.prompt/1", "method": "CoOp", "n_ctx": "4", "ctx_dim": "64",
                        "vis_dim": "32", "class_specific": "False", "ctx_init": ""})
    result = _quiet_run("evaluate", "--dataset", tmp_path / "images", "--backbone", "random_tiny",
                        "--prompts", tmp_path / "p.safetensors", "--output", tmp_path / "out")
    _one_line_error(result, "p.safetensors", "lacks classnames")


def test_refused_pickle_is_a_one_line_error_and_runs_nothing(tmp_path):
    import torch

    planted = tmp_path / "planted"

    class Payload:
        def __reduce__(self):
            return (open, (str(planted), "w"))

    torch.save({"visual.proj": torch.zeros(2), "payload": Payload()}, tmp_path / "model.pt")
    result = _quiet_run("zeroshot", "--backbone", tmp_path / "model.pt", "--classnames", "a", "b",
                        "--images", SAMPLES / "chelsea.jpg")
    _one_line_error(result, "Refused to read", "state_dict")
    assert not planted.exists()


def test_prompt_from_another_backbone_is_refused_unless_forced(tmp_path):
    write_class_folders(tmp_path / "images", {"a_cat": 4, "a_dog": 4})
    cocoop_tf.CoCoOp(cocoop_tf.load_clip("random_tiny", seed=0), ["x", "y"]).save_prompt(tmp_path / "p.safetensors")
    cocoop_tf.load_clip("random_tiny", seed=1).save_to_preset(str(tmp_path / "other_clip"))  # same widths
    arguments = ["evaluate", "--dataset", tmp_path / "images", "--backbone", tmp_path / "other_clip",
                 "--prompts", tmp_path / "p.safetensors"]
    refused = _quiet_run(*arguments, "--output", tmp_path / "refused")
    _one_line_error(refused, "trained on another backbone", "--force")
    forced = _quiet_run(*arguments, "--force", "--output", tmp_path / "forced")
    assert forced.returncode == 0, forced.stderr
    assert "warning:" in forced.stderr and "loading it anyway" in forced.stderr


def test_xla_flags_and_config_file_reach_the_run_config(tmp_path):
    from cocoop_tf.cli import _config
    from cocoop_tf.cli import build_parser

    command = ["base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny", "--output", "out"]
    settings = tmp_path / "run.yaml"
    settings.write_text("jit-compile: false\n")
    expected = {(): "auto", ("--jit-compile",): True, ("--no-jit-compile",): False,
                ("--config", str(settings)): False, ("--config", str(settings), "--jit-compile"): True}
    for flags, value in expected.items():
        assert repr(_config(build_parser().parse_args([*command, *flags]))[0].jit_compile) == repr(value)


def test_ivlp_and_promptsrc_flags_reach_the_run_config_and_bad_values_name_the_flag(capsys):
    import pytest

    from cocoop_tf.cli import _config
    from cocoop_tf.cli import build_parser
    from cocoop_tf.cli import main

    command = ["base2new", "--dataset", "oxford_pets", "--backbone", "random_tiny", "--output", "out"]
    defaults = _config(build_parser().parse_args(command))[0]
    assert (defaults.n_ctx_vision, defaults.vision_prompt_depth, defaults.text_loss_weight,
            defaults.image_loss_weight, defaults.gpa_mean, defaults.gpa_std) == (4, None, 25.0, 10.0, 15.0, 1.0)
    given = _config(build_parser().parse_args([
        *command, "--n-ctx-vision", "2", "--vision-prompt-depth", "0", "--text-loss-weight", "5",
        "--image-loss-weight", "0", "--gpa-mean", "3.5", "--gpa-std", "0.5",
    ]))[0]
    assert (given.n_ctx_vision, given.vision_prompt_depth, given.text_loss_weight, given.image_loss_weight,
            given.gpa_mean, given.gpa_std) == (2, 0, 5.0, 0.0, 3.5, 0.5)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag, words in {
        "--n-ctx-vision": "IVLP's and PromptSRC's vision prompt vectors (default: 4)",
        "--vision-prompt-depth": "0 for none (default: --prompt-depth)",
        "--text-loss-weight": "PromptSRC's weight of the L1 distance to frozen CLIP's text features (default: 25.0)",
        "--image-loss-weight": "(default: 10.0)",
        "--gpa-mean": "PromptSRC's Gaussian prompt aggregation: mean epoch of the weights (default: 15.0)",
        "--gpa-std": "std in epochs, > 0 (default: 1.0)",
    }.items():
        assert f"{flag} " in help_text and words in help_text, flag
    for flags, message in {
        ("--gpa-std", "0"): "gpa_std (--gpa-std) must be a number > 0, got 0.0",
        ("--text-loss-weight", "-1"): "text_loss_weight (--text-loss-weight) must be a number >= 0",
        ("--image-loss-weight", "nan"): "image_loss_weight (--image-loss-weight) must be a finite number",
        ("--gpa-mean", "inf"): "gpa_mean (--gpa-mean) must be a finite number",
        ("--vision-prompt-depth", "-1"): "vision_prompt_depth (--vision-prompt-depth) must be an integer >= 0",
    }.items():
        assert main([*command, *flags]) == 2, flags
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and message in error, error


def test_missing_dataset_errors_name_the_data_root_flag(tmp_path, capsys, monkeypatch):
    from cocoop_tf.cli import main
    from cocoop_tf.data.dataset import DATA_ROOT_VARIABLE

    monkeypatch.delenv(DATA_ROOT_VARIABLE, raising=False)
    command = ["train", "--dataset", "oxford_pets", "--backbone", "random_tiny", "--output", str(tmp_path / "out")]
    for flags in ([], ["--data-root", str(tmp_path / "nothing")]):
        assert main([*command, *flags]) == 2
        error = capsys.readouterr().err
        assert "data_root (--data-root)" in error and "data_root=" not in error, error
        assert error.count("\n") == 1, error
