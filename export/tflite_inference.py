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
    "images: float32 [B, {size}, {size}, 3], RGB pixel values 0..255; token_ids: int32 "
    "[C >= 1, L <= 77], rows [49406] name tokens [49407] 0... (see export/README.md)"
)


class TFLiteClassifier:
    """Runs an exported model's `serving_default` signature: logits for any class set.

    The signature runner resizes the inputs, so each call may have another
    batch size, number of classes and id length. TFLite has no assertion
    messages: the model's own input checks stop the interpreter with
    "gather index out of bounds"; this class says which contract was broken.

    Args:
        path: the `.tflite` file from `cocoop_tf.export.export_tflite`.
        image_size: the model's resolution (the backbone's, 224 for ViT-B/16).
        num_threads: interpreter threads.
    """

    def __init__(self, path, image_size, num_threads=None):
        self.image_size = image_size
        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")

    def __call__(self, images, token_ids):
        """Returns `{"logits", "probabilities"}`, float32 `[B, C]`.

        Args:
            images: `[B, S, S, 3]` RGB pixel values 0..255.
            token_ids: `[C, L]` from `client_inputs.tokenize_classnames`.
        """
        contract = CONTRACT.format(size=self.image_size)
        images = np.asarray(images, np.float32)
        token_ids = np.asarray(token_ids, np.int32)
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"images has shape {images.shape}; expected {contract}.")
        bad = np.flatnonzero(~np.isfinite(images).reshape(len(images), -1).all(axis=1))
        if bad.size:  # the interpreter has no assertions: it would answer NaN
            raise ValueError(
                f"images {bad.tolist()[:8]} hold NaN or infinite pixel values; expected {contract}."
            )
        try:
            return self.runner(images=images, token_ids=token_ids)
        except RuntimeError as error:
            raise ValueError(
                f"The model rejected token_ids of shape {token_ids.shape} ({error}); "
                f"expected {contract}. A class name may be too long."
            ) from None


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
