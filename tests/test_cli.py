"""The `cocoop-tf` command line, run as users run it."""

import pathlib
import subprocess

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


def test_bad_image_is_a_one_line_error(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    result = _run("zeroshot", "--backbone", "random_tiny", "--classnames", "a", "--images", str(broken))
    assert result.returncode == 2
    assert "error: Cannot decode" in result.stderr and "Traceback" not in result.stderr


def test_unknown_backbone_is_a_one_line_error():
    result = _run("zeroshot", "--backbone", "no_such_clip", "--classnames", "a", "--images", "x.jpg")
    assert result.returncode == 2
    assert "Unknown CLIP source 'no_such_clip'" in result.stderr and "Traceback" not in result.stderr
