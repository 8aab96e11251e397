"""Classify images with a model served by TF Serving, through its REST API.

    python export/rest_client.py --images cat.jpg --classnames cat dog "tabby cat"

The image size is the one the served model declares (its metadata), unless
`--image-size` says otherwise. Needs `numpy`, `pillow` and a CLIP tokenizer
(see client_inputs.py); no TensorFlow.
"""

import json
import sys
import urllib.error
import urllib.request

import numpy as np

from client_inputs import run_client


def predict(server, model, inputs, signature="serving_default", timeout=60):
    """Calls TF Serving's REST predict API; returns the outputs as arrays.

    The request uses the columnar `"inputs"` format: `images` and `token_ids`
    have different first dimensions (B images, C classes), which the row
    format (`"instances"`) does not allow.

    Args:
        server: e.g. `"http://localhost:8501"`.
        model: the model's name in TF Serving's config.
        inputs: dict of input name -> array, e.g. `images` and `token_ids`.
        signature: the signature to call.
        timeout: seconds.

    Raises:
        RuntimeError: with TF Serving's message, e.g. for a bad input.
    """
    body = {
        "signature_name": signature,
        "inputs": {name: np.asarray(value).tolist() for name, value in inputs.items()},
    }
    request = urllib.request.Request(
        f"{server}/v1/models/{model}:predict",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            outputs = json.load(response)["outputs"]
    except urllib.error.HTTPError as error:
        # TF Serving answers bad inputs with HTTP 400 and {"error": message}.
        raise RuntimeError(json.load(error).get("error", str(error))) from None
    return {name: np.asarray(value, np.float32) for name, value in outputs.items()}


def model_image_size(server, model, signature="serving_default", timeout=60):
    """The image size the served model's signature declares (`images` `[-1, S, S, 3]`), or None.

    From TF Serving's model metadata API (`GET /v1/models/<model>/metadata`).

    Raises:
        RuntimeError: with TF Serving's message (e.g. no such model), or
            when the server cannot be reached.
    """
    try:
        with urllib.request.urlopen(f"{server}/v1/models/{model}/metadata", timeout=timeout) as response:
            metadata = json.load(response)
    except urllib.error.HTTPError as error:
        raise RuntimeError(json.load(error).get("error", str(error))) from None
    except urllib.error.URLError as error:
        raise RuntimeError(f"cannot reach TF Serving at {server}: {error.reason}") from None
    try:
        images = metadata["metadata"]["signature_def"]["signature_def"][signature]["inputs"]["images"]
        dims = [int(d["size"]) for d in images["tensor_shape"]["dim"]]
    except (KeyError, TypeError, ValueError):
        return None
    return dims[1] if len(dims) == 4 and dims[1] == dims[2] and dims[1] > 0 else None


def main(argv=None):
    return run_client(predict, "http://localhost:8501", argv, model_image_size)


if __name__ == "__main__":
    sys.exit(main())
