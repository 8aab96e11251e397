"""The deployment examples of export/: config, REST and gRPC clients, TFLite inference.

TF Serving itself cannot run here (no Docker images offline), so the clients
talk, over the loopback interface, to small stand-ins that implement TF
Serving's REST and gRPC predict APIs on the exported SavedModel.
"""

import concurrent.futures
import http.server
import json
import pathlib
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
        import tflite_inference

        yield client_inputs, rest_client, grpc_client, tflite_inference


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = cocoop_tf.CoCoOp(cocoop_tf.load_clip("random_tiny"), ["a", "b"])
    path = export_saved_model(model, tmp_path_factory.mktemp("models") / "cocoop")
    return model, tf.saved_model.load(path)


def _run_signature(loaded, name, inputs):
    """Runs a signature as TF Serving does: inputs cast to its dtypes; errors as messages."""
    signature = loaded.signatures[name or "serving_default"]
    specs = signature.structured_input_signature[1]
    outputs = signature(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}


@pytest.fixture(scope="module")
def rest_server(served):
    loaded = served[1]

    class Handler(http.server.BaseHTTPRequestHandler):
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

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
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


def test_rest_client(examples, served, rest_server, capsys):
    rest_client = examples[1]
    model = served[0]
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    token_ids = serving_token_ids(model, NAMES)
    outputs = rest_client.predict(rest_server, "cocoop", {"images": images, "token_ids": token_ids})
    assert max_relative_difference(outputs["logits"], model.classify(images, token_ids)) <= 1e-4
    with pytest.raises(RuntimeError, match="token_ids holds no class"):
        rest_client.predict(rest_server, "cocoop", {"images": images, "token_ids": token_ids[:0]})
    rest_client.main(["--server", rest_server, "--images", *SAMPLES, "--classnames", *NAMES,
                      "--image-size", "32"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == SAMPLES


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
    grpc_client.main(["--server", grpc_server, "--images", *SAMPLES, "--classnames", *NAMES,
                      "--image-size", "32"])
    assert len(capsys.readouterr().out.splitlines()) == len(SAMPLES)


def test_tflite_inference_example(examples, served, tmp_path, capsys):
    tflite_inference = examples[3]
    model = served[0]
    path = export_tflite(model, tmp_path / "cocoop.tflite")
    classify = tflite_inference.TFLiteClassifier(path, image_size=32)
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
    tflite_inference.main(["--model", str(path), "--image-size", "32", "--images", *SAMPLES,
                           "--classnames", *NAMES])
    assert len(capsys.readouterr().out.splitlines()) == len(SAMPLES)
