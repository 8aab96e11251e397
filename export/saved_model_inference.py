"""Classify images with an exported SavedModel in TensorFlow alone (no TF Serving, no cocoop_tf).

    python export/saved_model_inference.py --model export/models/cocoop --images cat.jpg --classnames cat dog

`--model` is a version folder (`export/models/cocoop/1`) or the model's base
folder, whose highest version is taken, as TF Serving does. The image size
and, for a zero-shot export, the prompt come from the export's
`assets.extra/cocoop_tf.json`, unless `--image-size` or `--prompt` say
otherwise. Needs `tensorflow` and the inputs of client_inputs.py.
"""

import json
import os
import sys

from client_inputs import client_parser
from client_inputs import fail
from client_inputs import load_images
from client_inputs import print_top_classes
from client_inputs import size_problem
from client_inputs import tokenize_classnames

INFO_FILE = os.path.join("assets.extra", "cocoop_tf.json")


def version_folder(path):
    """The SavedModel folder: `path` itself, or its highest numbered version folder.

    Raises:
        FileNotFoundError: neither holds a `saved_model.pb`.
    """
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted(
        (int(name) for name in os.listdir(path) if name.isdigit()
         and os.path.isfile(os.path.join(path, name, "saved_model.pb"))),
    ) if os.path.isdir(path) else []
    if not versions:
        raise FileNotFoundError(
            f"No SavedModel in {path}: expected saved_model.pb there or in a version folder "
            f"({os.path.join(path, '1')}), as cocoop-tf export --format saved_model writes them."
        )
    return os.path.join(path, str(versions[-1]))


class SavedModelClassifier:
    """Runs an exported SavedModel's `serving_default` signature: logits for any class set.

    Args:
        path: a version folder of `cocoop_tf.export.export_saved_model`, or
            the base folder (its highest version).
        image_size: the model's resolution; None: the one its signature
            declares. Another than the model's is refused, naming the model's.

    Attributes:
        info: the export's `cocoop_tf.json` (image size, prompt, ...), or {}.
        image_size: the resolution the images are prepared at.
    """

    def __init__(self, path, image_size=None):
        import tensorflow as tf

        self.path = version_folder(path)
        self.signature = tf.saved_model.load(self.path).signatures["serving_default"]
        self.info = {}
        if os.path.isfile(os.path.join(self.path, INFO_FILE)):
            with open(os.path.join(self.path, INFO_FILE), encoding="utf-8") as f:
                self.info = json.load(f)
        declared = self.signature.structured_input_signature[1]["images"].shape
        model_size = declared[1] if declared.rank == 4 and declared[1] == declared[2] else None
        model_size = model_size or self.info.get("image_size")
        problem = size_problem(image_size, model_size, self.path) if image_size else None
        if problem:
            raise ValueError(problem)
        if not (image_size or model_size):
            raise ValueError(f"{self.path} does not declare its image size: pass it (--image-size).")
        self.image_size = image_size or model_size

    def __call__(self, images, token_ids):
        """Returns `{"logits", "probabilities"}` as NumPy float32 `[B, C]`.

        Args:
            images: `[B, S, S, 3]` RGB pixel values 0..255.
            token_ids: `[C, L]` from `client_inputs.tokenize_classnames`.

        Raises:
            ValueError: the model's own message for inputs it refuses.
        """
        import tensorflow as tf

        try:
            outputs = self.signature(
                images=tf.constant(images, tf.float32), token_ids=tf.constant(token_ids, tf.int32)
            )
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(_check_message(error.message)) from None
        return {name: value.numpy() for name, value in outputs.items()}


def _check_message(text):
    """The failed input check's own words from TensorFlow's error text, else its first line."""
    for line in text.splitlines():
        if line.startswith("assertion failed: "):
            # "[message:] [values]" -> "message: values"
            return line[len("assertion failed: "):].replace("] [", " ").strip("[]")
    return text.strip().splitlines()[0]


def main(argv=None):
    parser = client_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the SavedModel's version folder, or its base folder")
    args = parser.parse_args(argv)
    try:
        classify = SavedModelClassifier(args.model, args.image_size)
        # A zero-shot export takes its template; CoOp and CoCoOp exports "{}.".
        prompt = args.prompt if args.prompt != "{}." else classify.info.get("prompt", args.prompt)
        outputs = classify(
            load_images(args.images, classify.image_size), tokenize_classnames(args.classnames, prompt)
        )
    except (ValueError, ImportError, OSError) as error:
        return fail(parser, error)
    print_top_classes(args.images, outputs["probabilities"], args.classnames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
