"""Peak memory of one served request with many classes: chunked class loop vs one chunk.

    python benchmarks/serving_memory.py                          # CoCoOp on random_tiny, B=16, C=10000
    python benchmarks/serving_memory.py --batch 4 --classes 2000 --backbone mini_clip

A served CoCoOp encodes every class for every image. Its exported graphs take
the class set as a run-time input and encode it in a loop over chunks of
classes sized by a token budget (`PromptTextEncoder`); `--chunk C` exports
the same model with one chunk of all C classes, as before the loop existed.
Each request runs in a fresh process so that its peak resident memory
(`ru_maxrss`) is its own: the SavedModel through `tf.saved_model.load`, the
TFLite file through the LiteRT interpreter. The table also gives the time
of the request and the largest difference of the logits from Keras.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def request(runtime, path, batch, token_ids_file):
    """Runs one request in this (fresh) process; prints its peak memory, time and logits file."""
    import resource
    import time

    import numpy as np

    token_ids = np.load(token_ids_file)
    images = np.random.default_rng(0).uniform(0, 255, (batch, *json.loads(os.environ["IMAGE_SHAPE"])))
    images = images.astype(np.float32)
    if runtime == "saved_model":
        import tensorflow as tf

        serve = tf.saved_model.load(path).signatures["serving_default"]
        start = time.perf_counter()
        logits = serve(images=images, token_ids=token_ids)["logits"].numpy()
    else:
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=path).get_signature_runner("serving_default")
        start = time.perf_counter()
        logits = runner(images=images, token_ids=token_ids)["logits"]
    seconds = time.perf_counter() - start
    np.save(token_ids_file + f".{runtime}.npy", logits)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": peak / 1024, "seconds": seconds}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="random_tiny")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=10_000)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    import cocoop_tf
    from cocoop_tf.export import export_saved_model
    from cocoop_tf.export import export_tflite
    from cocoop_tf.export import serving_token_ids

    clip = cocoop_tf.load_clip(args.backbone)
    model = cocoop_tf.CoCoOp(clip, ["a", "b"])
    names = [f"class {i} of the {['small', 'big', 'odd'][i % 3]} kind" for i in range(args.classes)]
    token_ids = serving_token_ids(model, names)
    size = clip.vision_encoder.image_shape[0]
    images = np.random.default_rng(0).uniform(0, 255, (args.batch, size, size, 3)).astype(np.float32)
    reference = None
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        ids_file = os.path.join(folder, "token_ids.npy")
        np.save(ids_file, token_ids)
        for label, chunk in (("chunked (default)", None), (f"one chunk of {args.classes}", args.classes)):
            model.prompt_text_encoder.class_chunk_size = chunk
            saved = export_saved_model(model, os.path.join(folder, f"sm{chunk}"))
            tflite = export_tflite(model, os.path.join(folder, f"m{chunk}.tflite"))
            if reference is None:
                classify = tf.function(model.classify)
                reference = np.asarray(classify(images, tf.constant(token_ids)))
            for runtime, path in (("saved_model", saved), ("tflite", tflite)):
                result = subprocess.run(
                    [sys.executable, __file__, "--request", runtime, path, str(args.batch), ids_file],
                    capture_output=True, text=True, env={**os.environ, "IMAGE_SHAPE": json.dumps([size, size, 3])},
                )
                if result.returncode:
                    rows.append((label, runtime, "failed", "", result.stderr.strip().splitlines()[-1][:80]))
                    continue
                measured = json.loads(result.stdout.strip().splitlines()[-1])
                logits = np.load(ids_file + f".{runtime}.npy")
                difference = float(np.max(np.abs(logits - reference)) / np.max(np.abs(reference)))
                rows.append((label, runtime, f"{measured['peak_mb']:.0f}", f"{measured['seconds']:.1f}",
                             f"{difference:.1e}"))
    print(f"\nCoCoOp on {args.backbone}, one request: B = {args.batch} images, C = {args.classes} classes\n")
    print("| export | runtime | peak RSS of the process (MB) | request (s) | max rel. diff. vs Keras |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--request":
        request(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main()
