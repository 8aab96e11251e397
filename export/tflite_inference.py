"""Classify images with an exported .tflite model in the LiteRT interpreter.

    python export/tflite_inference.py --model cocoop.tflite --image-size 224 \
        --images cat.jpg --classnames cat dog "tabby cat"

Needs `ai-edge-litert` and the inputs of client_inputs.py; no TensorFlow.
"""

import argparse

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from client_inputs import load_images
from client_inputs import tokenize_classnames

CONTRACT = (
    "images: float32 [B >= 1, {size}, {size}, 3], RGB pixel values 0..255; token_ids: int32 "
    "[C >= 1, L <= 77], rows [49406] name tokens [49407] 0... (see export/README.md)"
)


class TFLiteClassifier:
    """Runs an exported model's `serving_default` signature: logits for any class set.

    The signature runner resizes the inputs, so each call may have another
    batch size, number of classes and id length. TFLite has no assertion
    messages: the model's own input checks stop the interpreter with
    "gather index out of bounds". This class checks the contract first, so
    that an error says which part of it this call broke.

    Args:
        path: the `.tflite` file from `cocoop_tf.export.export_tflite`.
        image_size: the model's resolution (the backbone's, 224 for ViT-B/16).
        num_threads: interpreter threads.
    """

    def __init__(self, path, image_size, num_threads=None):
        self.image_size = image_size
        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self._reported = ""

    def __call__(self, images, token_ids):
        """Returns `{"logits", "probabilities"}`, float32 `[B, C]`.

        Args:
            images: `[B, S, S, 3]` RGB pixel values 0..255.
            token_ids: `[C, L]` from `client_inputs.tokenize_classnames`.
        """
        contract = CONTRACT.format(size=self.image_size)
        images = np.asarray(images, np.float32)
        token_ids = np.asarray(token_ids)
        problem = _image_problem(images, self.image_size) or _token_ids_problem(token_ids)
        if problem:
            raise ValueError(f"{problem}; expected {contract}.")
        try:
            return self.runner(images=images, token_ids=token_ids.astype(np.int32))
        except RuntimeError as error:
            raise ValueError(
                f"The model rejected token_ids of shape {token_ids.shape} "
                f"({self._this_call(str(error))}); expected {contract}. A class name may be too long."
            ) from None

    def _this_call(self, text):
        # The interpreter's error reporter keeps every message since it was
        # made and repeats them all with each failure: keep this call's.
        new = text[len(self._reported):] if text.startswith(self._reported) else text
        self._reported = text
        return new.strip() or text


def _image_problem(images, size):
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        return f"images has shape {images.shape}"
    if not len(images):
        return "images holds no image"
    bad = np.flatnonzero(~((images >= 0) & (images <= 255)).reshape(len(images), -1).all(axis=1))
    if bad.size:  # NaN fails both comparisons
        return f"images {bad.tolist()[:8]} hold NaN, infinite or out-of-range pixel values"
    return None


def _token_ids_problem(token_ids):
    if token_ids.ndim != 2 or not 2 <= token_ids.shape[1] <= 77:
        return f"token_ids has shape {token_ids.shape}"
    if not len(token_ids):
        return "token_ids holds no class"
    if not np.issubdtype(token_ids.dtype, np.integer):
        return f"token_ids has dtype {token_ids.dtype}, not integer ids"
    wrong = np.flatnonzero((token_ids[:, 0] != 49406) | (token_ids.max(axis=1) != 49407) | (token_ids.min(axis=1) < 0))
    if wrong.size:
        return f"token_ids rows {wrong.tolist()[:8]} do not start with 49406 and end with 49407"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the .tflite file")
    parser.add_argument("--image-size", type=int, required=True, help="the model's resolution")
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--classnames", nargs="+", required=True)
    parser.add_argument("--prompt", default="{}.", help="zero-shot exports: their template")
    args = parser.parse_args(argv)
    classify = TFLiteClassifier(args.model, args.image_size)
    outputs = classify(
        load_images(args.images, args.image_size), tokenize_classnames(args.classnames, args.prompt)
    )
    for path, probabilities in zip(args.images, outputs["probabilities"]):
        best = np.argsort(-probabilities)[:5]
        print(path, ", ".join(f"{args.classnames[i]} {probabilities[i]:.3f}" for i in best))


if __name__ == "__main__":
    main()
