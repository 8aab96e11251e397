"""Classify images with a model served by TF Serving, through its REST API.

    python export/rest_client.py --images cat.jpg --classnames cat dog "tabby cat"

Needs `numpy`, `instant-clip-tokenizer` and `pillow` (see client_inputs.py);
no TensorFlow.
"""

import json
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


def main(argv=None):
    run_client(predict, "http://localhost:8501", argv)


if __name__ == "__main__":
    main()
