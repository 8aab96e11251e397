"""Start-up: the command line answers help and argument errors before TensorFlow; the library loads on use."""

import importlib.metadata
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import assert_quiet
from conftest import max_relative_difference
from conftest import user_environment

import cocoop_tf
from cocoop_tf import catalog
from cocoop_tf.cli import main
from cocoop_tf.cli import parse_arguments


def _error(capsys, *argv):
    """The one line a refused command line prints; it exits with 2."""
    with pytest.raises(SystemExit) as exit:
        main(list(argv))
    assert exit.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    return captured.err.rstrip("\n")


def test_argument_errors_are_one_line_with_the_help_hint_and_a_suggestion(capsys, tmp_path):
    assert _error(capsys, "base2new", "--bakcbone", "x") == (
        "cocoop-tf base2new: error: unrecognized argument --bakcbone; did you mean --backbone? "
        "(cocoop-tf base2new --help)"
    )
    assert _error(capsys, "base2nw") == (
        "cocoop-tf: error: unknown command 'base2nw'; did you mean base2new? (cocoop-tf --help)"
    )
    assert _error(capsys, "base2new", "--output", "o", "--methods", "coop", "cocop") == (
        "cocoop-tf base2new: error: argument --methods: unknown method 'cocop'; did you mean cocoop? "
        "(cocoop-tf base2new --help)"
    )
    assert _error(capsys, "base2new", "--output", "o", "--dataset", "oxford_pet") == (
        "cocoop-tf base2new: error: argument --dataset: unknown dataset 'oxford_pet'; did you mean "
        "oxford_pets? (cocoop-tf base2new --help)"
    )
    assert "argument --targets: unknown dataset 'eurosatt'; did you mean eurosat?" in _error(
        capsys, "cross-dataset", "--output", "o", "--targets", "dtd", "eurosatt"
    )
    assert "argument --format: unknown format 'tflit'; did you mean tflite?" in _error(
        capsys, "export", "--model", "m.keras", "--format", "tflit", "--output", "o"
    )
    assert _error(capsys, "train", "--output", "o", "--shot", "1", "--sedes", "1") == (
        "cocoop-tf train: error: unrecognized arguments --shot (did you mean --shots?), --sedes "
        "(did you mean --seeds?) (cocoop-tf train --help)"
    )
    assert "unrecognized argument dataset; did you mean --dataset?" in _error(capsys, "base2new", "--output", "o", "dataset")
    assert _error(capsys, "--quiet", "train") == "cocoop-tf: error: unrecognized argument --quiet (cocoop-tf --help)"
    assert _error(capsys, "base2new") == (
        "cocoop-tf base2new: error: the following arguments are required: --output (cocoop-tf base2new --help)"
    )
    # What may be a folder or a name the run resolves is left to the run.
    (tmp_path / "oxford_pet").mkdir()
    for dataset in ("OxfordPets", "tfds:oxford_iiit_pet", "mini_digits_animals", "my_images", "./oxford_pet"):
        assert parse_arguments(["base2new", "--output", "o", "--dataset", dataset]).dataset == dataset
    given = ["base2new", "--output", "o", "--dataset", "oxford_pet", "--data-root", str(tmp_path)]
    assert parse_arguments(given).dataset == "oxford_pet"


def test_no_flag_is_taken_abbreviated(capsys):
    assert _error(capsys, "base2new", "--backbon", "random_tiny", "--output", "o") == (
        "cocoop-tf base2new: error: unrecognized argument --backbon; did you mean --backbone? "
        "(cocoop-tf base2new --help)"
    )
    assert "unrecognized argument --form; did you mean --format?" in _error(
        capsys, "export", "--model", "m.keras", "--form", "tflite", "--output", "o"
    )
    assert "unrecognized argument --vers; did you mean --version?" in _error(capsys, "--vers")
    assert parse_arguments(["base2new", "--backbone", "random_tiny", "--output", "o"]).backbone == "random_tiny"


def test_help_names_every_method_and_dataset_and_version_is_the_package_s(capsys):
    from cocoop_tf.data.benchmarks import BENCHMARKS
    from cocoop_tf.data.named_datasets import registered_datasets
    from cocoop_tf.models import method_names

    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    lines = capsys.readouterr().out.split("\n")
    methods = next(line for line in lines if line.startswith("methods (--methods): ")).split()
    assert methods[2:2 + len(method_names())] == method_names()
    for name in ["CoOp", "CoCoOp", "KgCoOp", "MaPLe", "IVLP", "PromptSRC"]:
        assert name in lines[2]
    at = next(i for i, line in enumerate(lines) if line.startswith("datasets (--dataset"))
    datasets = " ".join(lines[at:at + 4]).replace(";", " ").split()
    assert all(name in datasets for name in [*BENCHMARKS, *registered_datasets()])
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"cocoop-tf {importlib.metadata.version('cocoop-tf')}\n"
    assert cocoop_tf.__version__ == importlib.metadata.version("cocoop-tf")


def test_the_catalog_equals_the_registries():
    from cocoop_tf.clip.loader import RANDOM_CONFIGS
    from cocoop_tf.clip.named_backbones import registered_backbones
    from cocoop_tf.cli import build_parser
    from cocoop_tf.data.named_datasets import registered_datasets
    from cocoop_tf.demo import benchmark
    from cocoop_tf.demo import weights
    from cocoop_tf.models import METHODS
    from cocoop_tf.protocols.config import method_settings
    from cocoop_tf.protocols.protocol import PROTOCOLS

    assert [(m.name, m.display_name, m.learns, m.runs_by_default) for m in catalog.METHODS] == [
        (name, cls.display_name, cls.learns, cls.runs_by_default) for name, cls in METHODS.items()
    ]
    for method in catalog.METHODS:
        settings = method_settings({}, method.name)
        assert (method.epochs, method.batch_size, method.lr) == (
            settings["epochs"], settings["batch_size"], settings["lr"]
        ), method.name
    assert list(catalog.PROTOCOLS) == list(PROTOCOLS)
    for name, listing in catalog.PROTOCOLS.items():
        protocol = PROTOCOLS[name]
        assert (list(listing.default_methods), listing.default_source, tuple(listing.default_targets)) == (
            protocol.default_methods(), protocol.default_source, tuple(protocol.default_targets)
        ), name
    assert set(PROTOCOLS) <= set(build_parser().commands)
    assert catalog.RANDOM_BACKBONES == tuple(RANDOM_CONFIGS)
    assert list(catalog.named_backbones()) == [*RANDOM_CONFIGS, *registered_backbones()]
    assert weights.MINI_CLIP_NAME in registered_backbones() and benchmark.NAME in registered_datasets()


_STARTUP_SCRIPT = """
import json, sys
import cocoop_tf
after_import = sorted(m for m in ("tensorflow", "keras", "keras_hub", "numpy") if m in sys.modules)
from cocoop_tf.cli import main
codes = []
for argv in (["--help"], ["base2new", "--help"], ["base2new", "--bakcbone", "x"], ["--version"],
             ["train", "--output", "o", "--dataset", "oxford_pet"]):
    try:
        main(argv)
    except SystemExit as exit:
        codes.append(exit.code)
loaded = sorted(m for m in ("tensorflow", "keras", "keras_hub", "numpy") if m in sys.modules)
print("RESULT " + json.dumps([after_import, codes, loaded]))
"""


def test_import_help_version_and_argument_errors_load_no_tensorflow():
    result = subprocess.run([sys.executable, "-c", _STARTUP_SCRIPT], capture_output=True, text=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    assert json.loads(line[len("RESULT "):]) == [[], [0, 0, 2, 0, 2], []]


_LOAD_SCRIPT = """
{imports}
import numpy as np
model = keras.saving.load_model({path!r})
logits = np.asarray(model(np.load({images!r})))
schedule = model.optimizer.get_config()["learning_rate"]["class_name"]
print("RESULT " + json.dumps([type(model).__name__, type(model.optimizer).__name__, schedule, logits.tolist()]))
"""


def test_a_keras_file_loads_after_import_cocoop_tf_in_either_order_quietly(tmp_path):
    model = cocoop_tf.CoCoOp(cocoop_tf.load_clip("random_tiny"), ["red fish", "green sky"])
    model.compile(optimizer=cocoop_tf.paper_optimizer(4, epochs=2), loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)  # saved with its state, as after training
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    expected = np.asarray(model(images))
    model.save(tmp_path / "model.keras")
    orders = {
        "cocoop_tf first": "import json\nimport numpy\nimport cocoop_tf\nimport keras",
        "keras first": "import json\nimport keras\nimport cocoop_tf",
    }
    # Both at once: each starts TensorFlow, a few seconds.
    running = {
        order: subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_LOAD_SCRIPT).format(
                imports=imports, path=str(tmp_path / "model.keras"), images=str(tmp_path / "images.npy"))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_environment(),
        )
        for order, imports in orders.items()
    }
    for order, process in running.items():
        stdout, stderr = process.communicate()
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        assert result.returncode == 0, (order, stderr[-3000:])
        if order == "cocoop_tf first":
            assert_quiet(result)  # TensorFlow started by Keras, after cocoop_tf: no start-up line
        else:
            assert "cuInit" not in stderr  # TensorFlow's import-time lines print before cocoop_tf runs
        line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
        model_class, optimizer, schedule, logits = json.loads(line[len("RESULT "):])
        assert (model_class, optimizer, schedule) == ("CoCoOp", "CoupledSGD", "WarmupCosineSchedule"), order
        assert max_relative_difference(logits, expected) <= 1e-6, order
