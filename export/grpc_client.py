"""Classify images with a model served by TF Serving, through its gRPC API.

    python export/grpc_client.py --images cat.jpg --classnames cat dog "tabby cat"

Needs `tensorflow-serving-api` (which brings TensorFlow and grpcio) and the
inputs of client_inputs.py.
"""

import grpc
import tensorflow as tf
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


def main(argv=None):
    run_client(predict, "localhost:8500", argv)


if __name__ == "__main__":
    main()
