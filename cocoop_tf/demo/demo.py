"""`cocoop-tf demo`: base-to-new on the mini benchmark, then export and serve, offline."""

import json
import os
import time

import numpy as np

from cocoop_tf.demo.benchmark import NAME as DATASET
from cocoop_tf.demo.weights import MINI_CLIP_NAME as BACKBONE

# The paper's recipe (SGD lr 0.002, batch 1, 10 epochs, warm-up, cosine,
# context "a photo of a"), with the training augmentation adapted to 32-pixel
# digits and silhouettes: crops keep at least half of the picture (the
# paper's crops of down to 8% leave a few strokes) and no mirroring (a
# mirrored digit is another shape).
DEMO_SETTINGS = {
    "backbone": BACKBONE,
    "seeds": [1, 2, 3],
    "shots": 16,
    "epochs": 10,
    "batch_size": 1,
    "eval_batch_size": 250,
    "lr": 0.002,
    "n_ctx": 4,
    "ctx_init": "a photo of a",
    "reduction": 16,
    "crop_scale": [0.5, 1.0],
    "flip": False,
}


def run_demo(output="cocoop_demo", data_root=None, log=print):
    """Runs the demo and returns the base-to-new results dict.

    1. Zero-shot CLIP, CoOp and CoCoOp base-to-new on the mini benchmark
       (`cocoop_tf.demo.benchmark`) with the small CLIP pretrained here,
       three seeds: the Base / New / H table and plot.
    2. The first seed's CoCoOp exported as a SavedModel (TF Serving layout)
       and a TFLite file, each classifying one test image of a new class
       against all 20 class names, given as token ids.

    Running it again in the same folder reuses the finished parts.

    Args:
        output: the demo's folder.
        data_root: where the mini benchmark's images are written (default:
            its cache folder).
        log: function for progress lines.
    """
    from cocoop_tf.protocols import RunConfig
    from cocoop_tf.protocols import run_protocol
    from cocoop_tf.protocols.run_folder import RUN_FILE

    started = time.time()
    config = RunConfig(**DEMO_SETTINGS, data_root=data_root)
    run_folder = os.path.join(output, "base2new")
    log(
        f"CoCoOp demo: zero-shot CLIP, CoOp and CoCoOp, base-to-new on {DATASET} "
        f"(20 classes: digits and animal silhouettes in a style the small CLIP never saw), "
        f"{config.shots} shots, seeds {' '.join(map(str, config.seeds))}.\n"
    )
    results = run_protocol(
        "base2new", config, run_folder, source=DATASET, subset="base",
        evaluations=[(DATASET, "base"), (DATASET, "new")],
        resume=os.path.exists(os.path.join(run_folder, RUN_FILE)), log=log,
    )
    log(f"Plot: {os.path.join(run_folder, 'results.png')}\n")
    served = export_and_classify(run_folder, output, config, data_root, log)
    with open(os.path.join(output, "deployment.json"), "w", encoding="utf-8") as f:
        json.dump(served, f, indent=2)
    log(f"Demo finished in {time.time() - started:.0f} s; everything is in {output}/")
    return results


def export_and_classify(run_folder, output, config, data_root, log=print):
    """Exports seed 1's CoCoOp and classifies one new-class test image through each format."""
    import tensorflow as tf

    from cocoop_tf.clip import load_clip
    from cocoop_tf.data import load_dataset
    from cocoop_tf.export import export_saved_model
    from cocoop_tf.export import export_tflite
    from cocoop_tf.export import serving_token_ids
    from cocoop_tf.models import CoCoOp

    dataset = load_dataset(DATASET, data_root)
    clip = load_clip(BACKBONE)
    prompt = os.path.join(run_folder, "runs", "cocoop_seed1", "prompt.safetensors")
    model = CoCoOp.from_prompt(clip, prompt, classnames=dataset.classnames)
    size = clip.vision_encoder.image_shape[0]
    new = dataset.subsample("new")
    item = new.test[0]
    truth = new.classnames[item.label]
    image = next(iter(new.to_tf_dataset("test", 1, training=False, image_size=size)))[0].numpy()
    token_ids = serving_token_ids(model, dataset.classnames)

    saved_model = export_saved_model(model, os.path.join(output, "saved_model", "cocoop"), overwrite=True)
    tflite_path = export_tflite(model, os.path.join(output, "cocoop.tflite"), overwrite=True)
    log(f"Exported CoCoOp (seed 1) to {saved_model} (TF Serving layout) and {tflite_path}")

    served = tf.saved_model.load(saved_model).signatures["serving_default"]
    saved_probabilities = served(images=tf.constant(image), token_ids=tf.constant(token_ids))["probabilities"]
    tflite_probabilities = _run_tflite(tflite_path, image, token_ids)
    keras_probabilities = tf.nn.softmax(model.classify(image, token_ids))
    report = {"image": item.path, "true_class": truth, "class_names": dataset.classnames}
    log(f"\nOne test image of a new class ({truth!r}), against all {len(dataset.classnames)} class names:")
    for name, probabilities in (
        ("Keras", keras_probabilities), ("SavedModel", saved_probabilities), ("TFLite", tflite_probabilities)
    ):
        probabilities = np.asarray(probabilities)[0]
        top = np.argsort(-probabilities)[:3]
        ranked = ", ".join(f"{dataset.classnames[i]} {probabilities[i]:.3f}" for i in top)
        log(f"  {name:<10} {ranked}")
        report[name] = {dataset.classnames[i]: float(probabilities[i]) for i in top}
    difference = float(np.max(np.abs(np.asarray(tflite_probabilities) - np.asarray(saved_probabilities))))
    log(f"  largest probability difference, TFLite vs SavedModel: {difference:.1e}\n")
    report["max_difference_tflite_saved_model"] = difference
    return report


def _run_tflite(path, images, token_ids):
    from ai_edge_litert.interpreter import Interpreter

    from cocoop_tf.native_stderr import LITERT_NOTICES
    from cocoop_tf.native_stderr import held_back

    with held_back(LITERT_NOTICES):
        runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
        outputs = runner(images=np.asarray(images, np.float32), token_ids=np.asarray(token_ids, np.int32))
    return outputs["probabilities"]
