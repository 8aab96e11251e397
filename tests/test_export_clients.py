"""The deployment examples of export/: config, REST and gRPC clients, SavedModel and TFLite inference.

TF Serving itself cannot run here (no Docker images offline), so the clients
talk, over the loopback interface, to small stand-ins that implement TF
Serving's REST and gRPC predict and model metadata APIs on the exported
SavedModel.
"""

import concurrent.futures
import http.server
import json
import pathlib
import re
import shlex
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

import cocoop_tf
from cocoop_tf.data.transforms import load_image
from cocoop_tf.data.transforms import resize_and_center_crop
from cocoop_tf.export import export_saved_model
from cocoop_tf.export import export_tflite
from cocoop_tf.export import serving_token_ids
from conftest import max_relative_difference

import grpc  # noqa: E402

from google.protobuf import json_format  # noqa: E402
from tensorflow.python.saved_model import loader_impl  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

EXPORT = pathlib.Path(__file__).parents[1] / "export"
SAMPLES = [str(pathlib.Path(cocoop_tf.__file__).parent / "data" / "samples" / name)
           for name in ("chelsea.jpg", "coffee.jpg")]
NAMES = ["tabby_cat", "cup of coffee", "Golden Retriever", "café", "7-eleven store"]


@pytest.fixture(scope="module")
def examples():
    """The modules of export/, imported as a user runs them (from that folder)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXPORT))
        import client_inputs
        import grpc_client
        import rest_client
        import saved_model_inference
        import tflite_inference

        yield client_inputs, rest_client, grpc_client, tflite_inference, saved_model_inference


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A 32-pixel CoCoOp, its SavedModel loaded, and the SavedModel's base folder."""
    model = cocoop_tf.CoCoOp(cocoop_tf.load_clip("random_tiny"), ["a", "b"])
    base = tmp_path_factory.mktemp("models") / "cocoop"
    path = export_saved_model(model, base)
    return model, tf.saved_model.load(path), base


def _signature_defs(base):
    """The SavedModel's signatures as TF Serving's metadata gives them (a SignatureDefMap)."""
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in loader_impl.parse_saved_model(str(base / "1")).meta_graphs[0].signature_def.items():
        signatures.signature_def[name].CopyFrom(signature)
    return signatures


def _run_signature(loaded, name, inputs):
    """Runs a signature as TF Serving does: inputs cast to its dtypes; errors as messages."""
    signature = loaded.signatures[name or "serving_default"]
    specs = signature.structured_input_signature[1]
    outputs = signature(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}


@pytest.fixture(scope="module")
def rest_server(served):
    loaded = served[1]
    metadata = json_format.MessageToDict(_signature_defs(served[2]), preserving_proto_field_name=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            assert self.path == "/v1/models/cocoop/metadata"
            answer = {"model_spec": {"name": "cocoop", "version": "1"}, "metadata": {"signature_def": metadata}}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/models/cocoop:predict"
            try:
                outputs = _run_signature(loaded, body.get("signature_name"), body["inputs"])
                status, answer = 200, {"outputs": {k: v.tolist() for k, v in outputs.items()}}
            except tf.errors.InvalidArgumentError as error:
                status, answer = 400, {"error": error.message}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def grpc_server(served):
    loaded = served[1]
    signature_defs = _signature_defs(served[2])

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def GetModelMetadata(self, request, context):
            if request.model_spec.name != "cocoop":
                context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request.model_spec.name}")
            assert list(request.metadata_field) == ["signature_def"]
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = "cocoop"
            response.metadata["signature_def"].Pack(signature_defs)
            return response

        def Predict(self, request, context):
            assert request.model_spec.name == "cocoop"
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            signature = loaded.signatures[request.model_spec.signature_name or "serving_default"]
            specs = signature.structured_input_signature[1]
            # TF Serving does not convert gRPC tensors: a wrong dtype is an error.
            for name, value in inputs.items():
                if value.dtype != specs[name].dtype.as_numpy_dtype:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name} has dtype {value.dtype}")
            try:
                outputs = _run_signature(loaded, request.model_spec.signature_name, inputs)
            except tf.errors.InvalidArgumentError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
            response = predict_pb2.PredictResponse()
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_models_config_is_a_valid_tf_serving_config():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(
        (EXPORT / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("cocoop", "/models/cocoop", "tensorflow")
    serve = (EXPORT / "serve.sh").read_text()
    assert "tensorflow/serving" in serve and "--model_config_file=/config/models.config" in serve


def test_client_inputs_match_the_library(examples, served):
    client_inputs = examples[0]
    assert (client_inputs.tokenize_classnames(NAMES) == cocoop_tf.tokenize_classnames(NAMES)).all()
    zero_shot = cocoop_tf.ZeroShotCLIP(served[0].clip, ["a"], template="a photo of a {}, a type of pet.")
    prompt_ids = client_inputs.tokenize_classnames(NAMES, prompt="a photo of a {}, a type of pet.")
    assert (prompt_ids == serving_token_ids(zero_shot, NAMES)).all()
    images = client_inputs.load_images(SAMPLES, 224)
    expected = np.stack([resize_and_center_crop(load_image(path), 224) for path in SAMPLES])
    assert images.shape == expected.shape and images.dtype == np.float32
    # Pillow's and TensorFlow's bicubic resampling differ by a few levels at most.
    assert np.mean(np.abs(images - expected)) < 2.0


def test_client_tokenizer_is_cocoop_tfs_where_instant_clip_tokenizer_is_missing(examples, monkeypatch):
    """After README's `pip install -e .` alone (no instant-clip-tokenizer), the clients tokenise alike."""
    client_inputs = examples[0]
    with_instant = client_inputs.tokenize_classnames(NAMES, prompt="a photo of a {}.")
    monkeypatch.setitem(sys.modules, "instant_clip_tokenizer", None)  # not installed
    without = client_inputs.tokenize_classnames(NAMES, prompt="a photo of a {}.")
    assert without.dtype == np.int32 and (without == with_instant).all()
    long_name = ["very " * 80 + "long"]  # cut as instant-clip-tokenizer cuts: ending with the end token
    assert (client_inputs.tokenize_classnames(long_name)[0, -1], without.shape[1]) == (49407, 77)
    monkeypatch.setitem(sys.modules, "cocoop_tf.clip.tokenizer", None)  # neither installed
    with pytest.raises(ImportError, match=r"install cocoop-tf \(`pip install -e \.`.*pip install instant-clip-tokenizer"):
        client_inputs.tokenize_classnames(NAMES)


def test_rest_client(examples, served, rest_server, capsys):
    rest_client = examples[1]
    model = served[0]
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    token_ids = serving_token_ids(model, NAMES)
    outputs = rest_client.predict(rest_server, "cocoop", {"images": images, "token_ids": token_ids})
    assert max_relative_difference(outputs["logits"], model.classify(images, token_ids)) <= 1e-4
    with pytest.raises(RuntimeError, match="token_ids holds no class"):
        rest_client.predict(rest_server, "cocoop", {"images": images, "token_ids": token_ids[:0]})
    assert rest_client.model_image_size(rest_server, "cocoop") == 32
    # README's command, without --image-size: the model's, from TF Serving's metadata.
    assert rest_client.main(["--server", rest_server, "--images", *SAMPLES, "--classnames", *NAMES]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == SAMPLES
    assert rest_client.main(["--server", rest_server, "--images", *SAMPLES, "--classnames", *NAMES,
                             "--image-size", "224"]) == 2
    err = capsys.readouterr().err
    assert "error: the image size 224 (--image-size) is not the model's resolution: the model 'cocoop' on " in err
    assert "takes 32 x 32 images" in err and len(err.strip().splitlines()) == 1


def test_grpc_client(examples, served, grpc_server, capsys):
    grpc_client = examples[2]
    model = served[0]
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    token_ids = serving_token_ids(model, NAMES[:2])
    outputs = grpc_client.predict(grpc_server, "cocoop", {"images": images, "token_ids": token_ids})
    assert max_relative_difference(outputs["logits"], model.classify(images, token_ids)) <= 1e-4
    features = grpc_client.predict(grpc_server, "cocoop", {"images": images}, signature="image_features")
    assert max_relative_difference(features["image_features"], model.encode_images(images)) <= 1e-4
    too_long = np.array([[49406] + [320] * 72 + [49407] + [0] * 3], np.int32)
    with pytest.raises(grpc.RpcError) as error:
        grpc_client.predict(grpc_server, "cocoop", {"images": images, "token_ids": too_long})
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "A class name is too long" in error.value.details()
    assert grpc_client.model_image_size(grpc_server, "cocoop") == 32
    assert grpc_client.main(["--server", grpc_server, "--images", *SAMPLES, "--classnames", *NAMES]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(SAMPLES)
    assert grpc_client.main(["--server", grpc_server, "--images", *SAMPLES, "--classnames", *NAMES,
                             "--image-size", "224"]) == 2
    assert "takes 32 x 32 images" in capsys.readouterr().err
    assert grpc_client.main(["--server", grpc_server, "--model", "other", "--images", *SAMPLES,
                             "--classnames", *NAMES]) == 2
    assert "error: Servable not found for request: other" in capsys.readouterr().err  # TF Serving's words


@pytest.fixture(scope="module")
def tflite_file(served, tmp_path_factory):
    return export_tflite(served[0], tmp_path_factory.mktemp("tflite") / "cocoop.tflite")


def test_tflite_inference_example(examples, served, tflite_file, capsys, monkeypatch):
    tflite_inference = examples[3]
    model = served[0]
    path = tflite_file
    classify = tflite_inference.TFLiteClassifier(path)  # the size the model declares
    assert classify.image_size == 32 and tflite_inference.TFLiteClassifier(path, image_size=32).image_size == 32
    with pytest.raises(ValueError, match=r"image size 224 \(--image-size\) is not the model's resolution: .*cocoop.tflite takes 32 x 32 images"):
        tflite_inference.TFLiteClassifier(path, image_size=224)
    images = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    token_ids = serving_token_ids(model, NAMES)
    logits = classify(images, token_ids)["logits"]
    assert max_relative_difference(logits, model.classify(images, token_ids)) <= 1e-4
    with pytest.raises(ValueError, match=r"images has shape \(4, 32, 32, 1\)"):
        classify(images[..., :1], token_ids)
    with pytest.raises(ValueError, match=r"token_ids holds no class; expected images: float32 \[B >= 1"):
        classify(images, token_ids[:0])
    with pytest.raises(ValueError, match="images holds no image"):
        classify(images[:0], token_ids)
    too_long = np.array([[49406] + [320] * 72 + [49407] + [0] * 3], np.int32)
    messages = []
    for _ in range(2):
        with pytest.raises(ValueError, match=r"The model rejected token_ids of shape \(1, 77\)") as error:
            classify(images, too_long)
        messages.append(str(error.value))
    # The interpreter repeats every earlier failure's text: each error says only its own.
    assert messages[0] == messages[1] and messages[1].count("failed to invoke") == 1, messages
    for value in (np.nan, 3e38, -1e6, 255.5):
        spoilt = images.copy()
        spoilt[2, 5, 5, 0] = value
        with pytest.raises(ValueError, match=r"images \[2\] hold NaN, infinite or out-of-range pixel values"):
            classify(spoilt, token_ids)
    assert max_relative_difference(classify(images, token_ids)["logits"], logits) == 0  # serves again
    # A model that did not say its size, given the wrong one: the images are named, not the ids.
    classify.image_size = 16
    with pytest.raises(ValueError, match=r"The model rejected images of shape \(4, 16, 16, 3\) .*16 is not its resolution"):
        classify(images[:, :16, :16], token_ids)
    # README's command after `pip install -e .` alone: no --image-size, no instant-clip-tokenizer.
    monkeypatch.setitem(sys.modules, "instant_clip_tokenizer", None)
    assert tflite_inference.main(["--model", str(path), "--images", *SAMPLES, "--classnames", *NAMES]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(SAMPLES)
    assert tflite_inference.main(["--model", str(path), "--image-size", "224", "--images", *SAMPLES,
                                  "--classnames", *NAMES]) == 2
    assert "error: the image size 224 (--image-size) is not the model's resolution" in capsys.readouterr().err


def test_saved_model_inference_example(examples, served, capsys):
    saved_model_inference = examples[4]
    model, _, base = served
    classify = saved_model_inference.SavedModelClassifier(base)  # the base folder: its highest version
    assert classify.path == str(base / "1") and classify.image_size == 32 and classify.info["prompt"] == "{}."
    images = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    token_ids = serving_token_ids(model, NAMES)
    outputs = classify(images, token_ids)
    assert max_relative_difference(outputs["logits"], model.classify(images, token_ids)) <= 1e-4
    too_long = np.array([[49406] + [320] * 72 + [49407] + [0] * 3], np.int32)
    with pytest.raises(ValueError, match="A class name is too long"):
        classify(images, too_long)
    assert saved_model_inference.main(["--model", str(base), "--images", *SAMPLES, "--classnames", *NAMES]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == SAMPLES
    assert saved_model_inference.main(["--model", str(base), "--image-size", "224", "--images", *SAMPLES,
                                       "--classnames", *NAMES]) == 2
    assert "takes 32 x 32 images" in capsys.readouterr().err
    assert saved_model_inference.main(["--model", str(base / "2"), "--images", *SAMPLES, "--classnames", "a"]) == 2
    assert "error: No SavedModel in" in capsys.readouterr().err


def readme_client_commands():
    """The `python export/<client>.py ...` commands of export/README.md's shell blocks, as written."""
    blocks = re.findall(r"```bash\n(.*?)```", (EXPORT / "README.md").read_text(encoding="utf-8"), re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith("python export/")]


def test_export_readme_commands_run_as_written(examples, served, tflite_file, rest_server, grpc_server,
                                                tmp_path, monkeypatch, capsys):
    """Each client command of export/README.md on a 32-pixel export, in a folder laid out as the README's."""
    modules = {module.__name__: module for module in examples[1:]}
    (tmp_path / "export" / "models").mkdir(parents=True)
    (tmp_path / "export" / "models" / "cocoop").symlink_to(served[2])
    (tmp_path / "cocoop.tflite").symlink_to(tflite_file)
    (tmp_path / "cat.jpg").symlink_to(SAMPLES[0])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "instant_clip_tokenizer", None)  # after `pip install -e .` alone
    servers = {"rest_client": rest_server, "grpc_client": grpc_server}  # the stand-ins' ports
    commands = readme_client_commands()
    assert sorted({c[1] for c in commands}) == [f"export/{name}.py" for name in sorted(modules)]
    for command in commands:
        name = pathlib.Path(command[1]).stem
        extra = ["--server", servers[name]] if name in servers else []
        assert modules[name].main(command[2:] + extra) == 0, (command, capsys.readouterr().err)
        lines = capsys.readouterr().out.splitlines()
        assert [line.split()[0] for line in lines] == ["cat.jpg"], (command, lines)
        assert "tabby cat" in lines[0] and "golden retriever" in lines[0]
