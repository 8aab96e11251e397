"""Served latency per image: Keras vs SavedModel vs TFLite, for 10 to 1000 classes.

    python benchmarks/serving_latency.py                      # CoCoOp on random_tiny
    python benchmarks/serving_latency.py --backbone random_vit_b16 --classes 10 100

Each runtime answers the same request, images `[B, S, S, 3]` and the token
ids of C class names, on this machine's CPU:
- keras: `model.classify` traced once with `tf.function`, as a Python server
  holding the Keras model would run it;
- saved_model: the exported `serving_default` signature loaded with
  `tf.saved_model.load`, the graph TF Serving runs (without its network hop);
- tflite and tflite_int8: the float32 and dynamic-range quantised TFLite
  models in the LiteRT interpreter (XNNPACK, all cores).
The table gives the median milliseconds per image over the timed calls.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import cocoop_tf  # noqa: E402
from cocoop_tf.export import export_saved_model  # noqa: E402
from cocoop_tf.export import export_tflite  # noqa: E402
from cocoop_tf.export import serving_token_ids  # noqa: E402

METHODS = {"cocoop": cocoop_tf.CoCoOp, "coop": cocoop_tf.CoOp, "zeroshot": cocoop_tf.ZeroShotCLIP}
WORDS = ["red", "small", "wild", "striped", "river", "mountain", "garden", "desert", "house", "bird",
         "fish", "tree", "car", "boat", "flower", "dog", "cat", "lamp", "chair", "bridge"]


def classnames(count):
    """Distinct names of two or three words, like most datasets' class names."""
    names = [f"{a} {b}" for a in WORDS for b in WORDS if a != b]
    names += [f"{a} {b} {c}" for a in WORDS[:5] for b in WORDS[5:] for c in WORDS[10:]]
    return names[:count]


def time_per_image(run, batch, min_calls=3, min_seconds=2.0):
    """Median seconds per image over at least `min_calls` calls, after one warm-up."""
    run()
    times, start = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_seconds:
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
        if len(times) >= 50:
            break
    return float(np.median(times)) / batch


def runtimes(model, folder):
    """One callable per runtime: `(images, token_ids) -> logits`."""
    from ai_edge_litert.interpreter import Interpreter

    keras_fn = tf.function(model.classify, reduce_retracing=True)
    saved = tf.saved_model.load(export_saved_model(model, os.path.join(folder, "serving")))
    serve = saved.signatures["serving_default"]
    result = {
        "keras": lambda images, ids: keras_fn(images, ids).numpy(),
        "saved_model": lambda images, ids: serve(images=images, token_ids=ids)["logits"].numpy(),
    }
    for name, quantize in (("tflite", None), ("tflite_int8", "dynamic")):
        path = export_tflite(model, os.path.join(folder, f"{name}.tflite"), quantize=quantize)
        runner = Interpreter(model_path=path, num_threads=os.cpu_count()).get_signature_runner(
            "serving_default"
        )
        result[name] = lambda images, ids, runner=runner: runner(images=images, token_ids=ids)["logits"]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="random_tiny", help="a cocoop_tf.load_clip source")
    parser.add_argument("--method", default="cocoop", choices=sorted(METHODS))
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)

    clip = cocoop_tf.load_clip(args.backbone)
    model = METHODS[args.method](clip, classnames(2))
    size = clip.vision_encoder.image_shape[0]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        functions = runtimes(model, folder)
        print(f"{args.method} on {args.backbone}, {os.cpu_count()} CPU cores; ms per image (median)")
        print(f"| C | B | {' | '.join(functions)} |")
        print("|---|---|" + "---|" * len(functions))
        for num_classes in args.classes:
            token_ids = serving_token_ids(model, classnames(num_classes))
            for batch in args.batch_sizes:
                images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
                cells = [
                    f"{1000 * time_per_image(lambda: run(images, token_ids), batch):.2f}"
                    for run in functions.values()
                ]
                print(f"| {num_classes} | {batch} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
