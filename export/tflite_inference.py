"""Classify images with an exported .tflite model in the LiteRT interpreter.

    python export/tflite_inference.py --model cocoop.tflite --images cat.jpg --classnames cat dog "tabby cat"

The image size is the model's own (read from the model), unless `--image-size`
says otherwise. Needs `ai-edge-litert` and the inputs of client_inputs.py (all
of which cocoop-tf installs); no TensorFlow.
"""

import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from client_inputs import client_parser
from client_inputs import fail
from client_inputs import load_images
from client_inputs import print_top_classes
from client_inputs import size_problem
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
        image_size: the model's resolution (the backbone's, 224 for ViT-B/16);
            None: the one the model declares (`model_image_size`). Another
            than the model's is refused, naming the model's.
        num_threads: interpreter threads.
    """

    def __init__(self, path, image_size=None, num_threads=None):
        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.model_image_size = model_image_size(self.interpreter)
        if image_size is None and self.model_image_size is None:
            raise ValueError(f"{path} does not declare its image size: pass it (--image-size).")
        problem = size_problem(image_size, self.model_image_size, str(path)) if image_size else None
        if problem:
            raise ValueError(problem)
        self.image_size = image_size or self.model_image_size
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
            reason = self._this_call(str(error))
        if not self._images_pass(images):
            raise ValueError(
                f"The model rejected images of shape {images.shape} ({reason}): {self.image_size} is "
                "not its resolution; pass the image size of the backbone it was exported from "
                "(image_size in cocoop_tf.json of its SavedModel export; 224 for ViT-B/16)."
            )
        raise ValueError(
            f"The model rejected token_ids of shape {token_ids.shape} ({reason}); expected {contract}. "
            "A class name may be too long."
        )

    def _images_pass(self, images):
        """Whether the model's `image_features` signature takes `images` (one, to be quick)."""
        try:
            self.interpreter.get_signature_runner("image_features")(images=images[:1])
        except (RuntimeError, ValueError) as error:
            self._this_call(str(error))
            return False
        return True

    def _this_call(self, text):
        # The interpreter's error reporter keeps every message since it was
        # made and repeats them all with each failure: keep this call's.
        new = text[len(self._reported):] if text.startswith(self._reported) else text
        self._reported = text
        return new.strip() or text


def model_image_size(interpreter):
    """The resolution S an exported model's graph checks images against, or None.

    The model declares `images` as `[-1, -1, -1, -1]` (so that its checks see
    the real shape), and shapes them `[-1, S, S, 3]` inside: S is the size
    of those tensors, when the model has one.

    Args:
        interpreter: a LiteRT `Interpreter` of the model.
    """
    sizes = set()
    for tensor in interpreter.get_tensor_details():
        shape = [int(d) for d in tensor["shape_signature"]]
        if len(shape) == 4 and shape[0] == -1 and shape[3] == 3 and shape[1] == shape[2] > 1:
            sizes.add(shape[1])
    return sizes.pop() if len(sizes) == 1 else None


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
    parser = client_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the .tflite file")
    args = parser.parse_args(argv)
    try:
        classify = TFLiteClassifier(args.model, args.image_size)
        outputs = classify(
            load_images(args.images, classify.image_size), tokenize_classnames(args.classnames, args.prompt)
        )
    except (ValueError, ImportError, OSError) as error:
        return fail(parser, error)
    print_top_classes(args.images, outputs["probabilities"], args.classnames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
