"""Classify images with a model served by TF Serving, through its gRPC API.

    python export/grpc_client.py --images cat.jpg --classnames cat dog "tabby cat"

The image size is the one the served model declares (its metadata), unless
`--image-size` says otherwise. Needs `tensorflow-serving-api` (which brings
TensorFlow and grpcio) and the inputs of client_inputs.py.
"""

import sys

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from client_inputs import run_client

# Batches of 224x224 images pass gRPC's default 4 MB message limit quickly.
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
DTYPES = {"images": tf.float32, "token_ids": tf.int32}


def predict(target, model, inputs, signature="serving_default", timeout=60):
    """Calls TF Serving's `PredictionService.Predict`; returns the outputs as arrays.

    Args:
        target: the server's gRPC address, e.g. `"localhost:8500"`.
        model: the model's name in TF Serving's config.
        inputs: dict of input name -> array, e.g. `images` (float32) and
            `token_ids` (int32).
        signature: the signature to call.
        timeout: seconds.

    Raises:
        grpc.RpcError: with TF Serving's message (`error.details()`), e.g.
            INVALID_ARGUMENT for a bad input.
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=DTYPES.get(name, tf.float32)))
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=timeout)
    return {name: tf.make_ndarray(value) for name, value in response.outputs.items()}


def model_image_size(target, model, signature="serving_default", timeout=60):
    """The image size the served model's signature declares (`images` `[-1, S, S, 3]`), or None.

    From `PredictionService.GetModelMetadata`.

    Raises:
        grpc.RpcError: with TF Serving's message, e.g. NOT_FOUND for no such model.
    """
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.append("signature_def")
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.GetModelMetadata(request, timeout=timeout)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    if not response.metadata["signature_def"].Unpack(signatures) or signature not in signatures.signature_def:
        return None
    inputs = signatures.signature_def[signature].inputs
    if "images" not in inputs:
        return None
    dims = [d.size for d in inputs["images"].tensor_shape.dim]
    return dims[1] if len(dims) == 4 and dims[1] == dims[2] and dims[1] > 0 else None


def main(argv=None):
    return run_client(predict, "localhost:8500", argv, model_image_size, errors=(grpc.RpcError,))


if __name__ == "__main__":
    sys.exit(main())
