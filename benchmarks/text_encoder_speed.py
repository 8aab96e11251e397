"""CoCoOp's training step and evaluation on ViT-B/16 shapes, against the exact FLOP floor.

Two backbones with random weights:
- "text": ViT-B/16's text tower (12 layers, width 512, 8 heads, 77 positions,
  512-d projection) and a small vision tower, so the text path dominates;
- "full": CLIP ViT-B/16, both towers, 224 px images.

Three paths of the same model:
- reference: every (image, class) prompt at the full 77 positions; keras-hub's
  vision tower; no XLA;
- previous: the efficient path as it was before packing: classes in
  length-sorted chunks padded to the chunk's longest name, every position of
  the last block computed; keras-hub's vision tower; no XLA;
- efficient: the default: name tokens packed without padding, the first
  block's name projections once per class, the last block at the end tokens
  only, the vision tower with plain matmuls and its last block at the class
  token only; without and with XLA (`--jit-compile`).

The floor is the FLOPs the exact result needs, divided by the dense-matmul
rate measured in the same run: every non-padded prompt token through every
block (the first block's name projections once per class, the last block's
query, output projection and MLP at the end tokens only), attention over the
keys each token sees, and, in training, the backward pass to the inputs only
(the backbone is frozen), about as many FLOPs again for what depends on the
context; plus the vision tower's forward pass (its last block at the class
token only). Each configuration runs in its own process, TensorFlow limited to
the requested threads.

    python benchmarks/text_encoder_speed.py [--threads 2] [--quick] [--bfloat16] [--methods] [--method-list NAME ...]

`--quick`: C = 50, B = 4 training and C = 1000, B = 32 evaluation only.
`--bfloat16`: also the efficient path under the "mixed_bfloat16" policy.
`--methods` (`--methods-only`): also (only) the training step of CoOp, CoCoOp,
KgCoOp, MaPLe, IVLP and PromptSRC at C = 50, B = 4, with the papers' depth 9
where the towers have the blocks: MaPLe J = 9 on the full model and J = 1 on
the text model, whose vision tower has one block; IVLP and PromptSRC text
depth 9 on both, vision depth 9 on the full model and 1 on the text model.
PromptSRC's step is its whole loss: the frozen image tower's pass and the
three regularisers with the cross-entropy (its frozen class features over the
templates are computed once, before the timed steps). `--method-list NAME ...`
times only those methods.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

N_CTX = 4
WORDS = (
    "red tailed hawk golden retriever sports car space shuttle church mountain bike "
    "coffee mug african elephant great white shark rock beauty pomeranian airliner "
    "container ship espresso maker grey whale tabby cat barn spider park bench "
    "bell pepper strawberry volcano coral reef daisy yellow lady slipper"
).split()
TEXT = dict(vocabulary_size=49408, context_length=77, text_width=512, text_layers=12,
            text_heads=8, text_mlp_width=2048, projection_dim=512)
BACKBONES = {
    "text": dict(image_size=32, patch_size=16, vision_width=64, vision_layers=1, vision_heads=1,
                 vision_mlp_width=128, **TEXT),
    "full": dict(image_size=224, patch_size=16, vision_width=768, vision_layers=12,
                 vision_heads=12, vision_mlp_width=3072, **TEXT),
}
PATHS = {  # text mode, vision mode, XLA
    "reference": ("reference", "reference", False),
    "previous": ("padded", "reference", False),
    "efficient": ("efficient", "efficient", False),
    "efficient_xla": ("efficient", "efficient", True),
}


def classnames(count, seed=0):
    """Distinct class names of 1 to 3 everyday words, like most benchmark datasets'."""
    import numpy as np

    rng = np.random.default_rng(seed)
    names = {}
    while len(names) < count:
        name = " ".join(rng.choice(WORDS, rng.integers(1, 4)))
        names.setdefault(name, None)
    return list(names)


def _setup(threads):
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _model(backbone, path, num_classes, precision, method="cocoop"):
    import keras

    import cocoop_tf
    from cocoop_tf.clip.backbone import CLIPArchitecture
    from cocoop_tf.clip.backbone import random_backbone

    keras.mixed_precision.set_global_policy(precision)
    clip = random_backbone(CLIPArchitecture(**BACKBONES[backbone]))
    clip.trainable = False
    settings = {}
    arch = BACKBONES[backbone]
    if method == "maple":  # the paper's depth where the towers have the blocks
        settings["prompt_depth"] = min(9, arch["vision_layers"], arch["text_layers"])
    elif method in ("ivlp", "promptsrc"):  # independent towers: each its own depth
        settings["prompt_depth"] = min(9, arch["text_layers"])
        settings["vision_prompt_depth"] = min(9, arch["vision_layers"])
    model = cocoop_tf.models.get_method(method)(clip, classnames(num_classes), **settings)
    text_mode, vision_mode, jit = PATHS[path]
    model.prompt_text_encoder.mode = text_mode
    model.image_encoder.mode = vision_mode
    return model, jit


def _images(backbone, batch):
    import numpy as np
    import tensorflow as tf

    size = BACKBONES[backbone]["image_size"]
    return tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)), tf.float32)


class PeakMemory:
    """Samples the process's resident memory in a thread; reports the peak increase."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    @staticmethod
    def _rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    @property
    def increase_mb(self):
        return (self.peak - self.base) / 2**20


def measure_step(backbone, path, batch, num_classes, threads, repeats, precision="float32", method="cocoop"):
    """One training-step configuration, in this process: seconds per step, peak MB."""
    _setup(threads)
    import numpy as np
    import tensorflow as tf

    import cocoop_tf

    model, jit = _model(backbone, path, num_classes, precision, method)
    optimizer = cocoop_tf.training.CoupledSGD(0.002)
    images = _images(backbone, batch)
    labels = tf.constant(np.arange(batch) % num_classes)

    @tf.function(jit_compile=jit)
    def gradients():
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            ) + sum(tf.cast(term, tf.float32) for term in model.losses)  # KgCoOp's, PromptSRC's terms
        return loss, tape.gradient(loss, model.trainable_variables)

    def step():
        loss, grads = gradients()
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    # The peak includes the first step: later steps reuse the memory it took,
    # so sampling only after it would miss the activations.
    with PeakMemory() as memory:
        step()  # trace, compile and warm up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step().numpy()
            times.append(time.perf_counter() - start)
    return {"seconds": float(np.median(times)), "peak_mb": memory.increase_mb}


def measure_eval(backbone, path, batch, num_classes, threads, repeats, precision="float32"):
    """Images per second of evaluation (the forward pass), peak MB."""
    _setup(threads)
    import tensorflow as tf

    model, jit = _model(backbone, path, num_classes, precision)
    images = _images(backbone, batch)
    forward = tf.function(lambda: model(images), jit_compile=jit)
    with PeakMemory() as memory:
        forward()  # trace, compile and warm up
        start = time.perf_counter()
        for _ in range(repeats):
            forward().numpy()
        seconds = (time.perf_counter() - start) / repeats
    return {"images_per_second": batch / seconds, "peak_mb": memory.increase_mb}


def matmul_rate(threads, dtype="float32"):
    """Dense matmul rate (GFLOP/s) at the text tower's typical shapes."""
    _setup(threads)
    import tensorflow as tf

    width, mlp = TEXT["text_width"], TEXT["text_mlp_width"]
    rates = []
    for rows, inner, outer in ((4096, width, mlp), (4096, mlp, width), (4096, width, width)):
        a = tf.cast(tf.random.normal((rows, inner)), dtype)
        b = tf.cast(tf.random.normal((inner, outer)), dtype)
        run = tf.function(lambda: tf.matmul(a, b))
        run()
        start = time.perf_counter()
        for _ in range(20):
            run().numpy()
        rates.append(2 * rows * inner * outer * 20 / (time.perf_counter() - start) / 1e9)
    return {"gflops": sum(rates) / len(rates)}


def _block_flops(rows, width, mlp, end_rows=None, shared_rows=0):
    """Matmul FLOPs of one pre-norm block's projections and MLP.

    `rows` tokens need keys and values; `end_rows` of them (all if None) the
    query, output projection and MLP; `shared_rows` more need only query,
    key and value (computed once, not per group).
    """
    end_rows = rows if end_rows is None else end_rows
    return 2 * (rows * 2 * width * width + end_rows * (2 * width * width + 2 * width * mlp)
                + shared_rows * 3 * width * width)


def floor_flops(backbone, batch, num_classes, training):
    """FLOPs the exact result needs (see the module docstring)."""
    import numpy as np

    from cocoop_tf.clip.prompts import tokenize_classnames

    arch = BACKBONES[backbone]
    width, mlp, layers = arch["text_width"], arch["text_mlp_width"], arch["text_layers"]
    ids = tokenize_classnames(classnames(num_classes), arch["context_length"], N_CTX)
    lengths = np.argmax(ids, axis=-1)  # name tokens after the start token, end token included
    names, prefix = int(lengths.sum()), 1 + N_CTX
    # Keys each token attends to (scores and weighted sum: 4 * width FLOPs per key).
    name_keys = batch * sum(prefix + s + 1 for n in lengths for s in range(n))
    prefix_keys = batch * prefix * (prefix + 1) // 2
    attention = 4 * width * (name_keys + prefix_keys)
    last_attention = 4 * width * batch * int(np.sum(prefix + lengths))
    tokens = batch * (prefix + names)
    context_dependent = (
        (layers - 2) * (_block_flops(tokens, width, mlp) + attention)
        # First block: the names' query/key/value projections do not depend on the context.
        + _block_flops(tokens, width, mlp) - 2 * batch * names * 3 * width * width + attention
        # Last block: keys and values everywhere, the rest at the end tokens.
        + _block_flops(tokens, width, mlp, end_rows=batch * num_classes) + last_attention
        + 2 * batch * num_classes * width * arch["projection_dim"]
    )
    text_fixed = 2 * names * 3 * width * width
    vision = _vision_flops(arch, batch)
    return (2 if training else 1) * context_dependent + text_fixed + vision


def _vision_flops(arch, batch):
    width, mlp, layers = arch["vision_width"], arch["vision_mlp_width"], arch["vision_layers"]
    patches = (arch["image_size"] // arch["patch_size"]) ** 2
    tokens = batch * (patches + 1)
    embedding = 2 * batch * patches * arch["patch_size"] ** 2 * 3 * width
    attention = 4 * width * batch * (patches + 1) ** 2
    blocks = (layers - 1) * (_block_flops(tokens, width, mlp) + attention)
    blocks += _block_flops(tokens, width, mlp, end_rows=batch) + 4 * width * tokens
    return embedding + blocks + 2 * batch * width * arch["projection_dim"]


def _run_child(kind, **kwargs):
    command = [sys.executable, __file__, "--child", json.dumps({"kind": kind, **kwargs})]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _reference_feasible(batch, num_classes, memory_limit_gb, time_limit_s, rate_gflops):
    """Skip reference runs that would exhaust memory or take many minutes."""
    sequences = batch * num_classes
    width, mlp, layers, length = TEXT["text_width"], TEXT["text_mlp_width"], TEXT["text_layers"], 77
    # Saved activations: about 12 tensors of [sequences, 77, 512] per layer, plus the MLP's 4x.
    memory_gb = sequences * length * width * 4 * layers * 16 / 2**30
    flops = 2 * layers * sequences * length * (2 * (4 * width * width + 2 * width * mlp))
    seconds = flops / (rate_gflops * 1e9)
    return memory_gb <= memory_limit_gb and seconds <= time_limit_s, memory_gb, seconds


def _seconds(result):
    return result["error"] if "error" in result else f"{result['seconds']:.3f}"


def _peak(result):
    return "-" if "error" in result else f"{result['peak_mb']:.0f}"


def training_table(configs, rate, args):
    print("Training step (forward and backward), float32:\n")
    print("| model | C | B | reference (s) | previous (s) | efficient (s) | efficient, XLA (s) "
          "| XLA vs previous | floor (s) | XLA / floor | peak MB: previous / efficient / XLA |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for backbone, num_classes, batch in configs:
        run = dict(backbone=backbone, batch=batch, num_classes=num_classes, threads=args.threads)
        xla = _run_child("step", path="efficient_xla", repeats=5, **run)
        fast = _run_child("step", path="efficient", repeats=3, **run)
        previous = _run_child("step", path="previous", repeats=3, **run)
        feasible, memory_gb, seconds = _reference_feasible(
            batch, num_classes, args.memory_limit_gb, args.time_limit_s, rate
        )
        if feasible and backbone == "text":
            slow = _run_child("step", path="reference", repeats=1 if seconds > 20 else 3, **run)
        else:
            slow = {"error": "skipped" if backbone != "text" else f"skipped: ~{memory_gb:.0f} GB"}
        floor = floor_flops(backbone, batch, num_classes, training=True) / (rate * 1e9)
        ratio = "-"
        if "error" not in xla and "error" not in previous:
            ratio = f"{previous['seconds'] / xla['seconds']:.2f}x"
        vs_floor = "-" if "error" in xla else f"{xla['seconds'] / floor:.2f}"
        print(f"| {backbone} | {num_classes} | {batch} | {_seconds(slow)} | {_seconds(previous)} | "
              f"{_seconds(fast)} | {_seconds(xla)} | {ratio} | {floor:.3f} | {vs_floor} | "
              f"{_peak(previous)} / {_peak(fast)} / {_peak(xla)} |", flush=True)


def evaluation_table(configs, rate, args):
    print("\nEvaluation (forward pass), C = 1000 classes, float32:\n")
    print("| model | B | previous (images/s) | efficient (images/s) | efficient, XLA (images/s) "
          "| best vs previous | floor (images/s) | floor / best | peak MB: previous / efficient / XLA |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backbone, batch in configs:
        run = dict(backbone=backbone, batch=batch, num_classes=1000, threads=args.threads, repeats=1)
        results = [_run_child("eval", path=path, **run) for path in ("previous", "efficient", "efficient_xla")]
        floor = batch * rate * 1e9 / floor_flops(backbone, batch, 1000, training=False)
        cells = [r["error"] if "error" in r else f"{r['images_per_second']:.3f}" for r in results]
        speeds = [r["images_per_second"] for r in results[1:] if "error" not in r]
        ratio = vs_floor = "-"
        if speeds:
            vs_floor = f"{floor / max(speeds):.2f}"
            if "error" not in results[0]:
                ratio = f"{max(speeds) / results[0]['images_per_second']:.2f}x"
        peaks = " / ".join(_peak(r) for r in results)
        print(f"| {backbone} | {batch} | {' | '.join(cells)} | {ratio} | {floor:.3f} | {vs_floor} | {peaks} |",
              flush=True)


def bfloat16_table(args):
    rate = _run_child("matmul", threads=args.threads, dtype="bfloat16")
    if "error" in rate:
        print(f"\nbfloat16: not measured ({rate['error']})")
        return
    print(f"\nEfficient path with XLA under mixed_bfloat16 (dense bfloat16 matmul rate: {rate['gflops']:.1f} GFLOP/s):\n")
    print("| model | measurement | float32 | bfloat16 | speed-up |")
    print("|---|---|---|---|---|")
    for backbone in ("text", "full"):
        run = dict(backbone=backbone, path="efficient_xla", threads=args.threads)
        results = [_run_child("step", batch=4, num_classes=50, repeats=5, precision=p, **run)
                   for p in ("float32", "mixed_bfloat16")]
        cells = [_seconds(r) for r in results]
        ratio = "-" if any("error" in r for r in results) else f"{results[0]['seconds'] / results[1]['seconds']:.2f}x"
        print(f"| {backbone} | training step C=50 B=4 (s) | {cells[0]} | {cells[1]} | {ratio} |", flush=True)
        results = [_run_child("eval", batch=32, num_classes=1000, repeats=1, precision=p, **run)
                   for p in ("float32", "mixed_bfloat16")]
        cells = [r.get("error") or f"{r['images_per_second']:.3f}" for r in results]
        ratio = "-" if any("error" in r for r in results) else (
            f"{results[1]['images_per_second'] / results[0]['images_per_second']:.2f}x")
        print(f"| {backbone} | evaluation C=1000 B=32 (images/s) | {cells[0]} | {cells[1]} | {ratio} |", flush=True)


METHODS = ("coop", "cocoop", "kgcoop", "maple", "ivlp", "promptsrc")


def methods_table(args):
    print("\nTraining step per method, C = 50, B = 4, efficient path with XLA, float32 (s):\n")
    methods = tuple(args.method_list or METHODS)
    print("| model | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for backbone in ("text", "full"):
        run = dict(backbone=backbone, path="efficient_xla", batch=4, num_classes=50, threads=args.threads)
        cells = [_seconds(_run_child("step", repeats=5, method=m, **run)) for m in methods]
        print(f"| {backbone} | " + " | ".join(cells) + " |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="C=50, B=4 and C=1000, B=32 only")
    parser.add_argument("--bfloat16", action="store_true", help="also the efficient path in bfloat16")
    parser.add_argument("--methods", action="store_true", help="also the step of each method (CoOp, ..., PromptSRC)")
    parser.add_argument("--methods-only", action="store_true", help="only the step of each method")
    parser.add_argument("--method-list", nargs="+", choices=METHODS, help="the methods --methods times")
    parser.add_argument("--memory-limit-gb", type=float, default=12.0)
    parser.add_argument("--time-limit-s", type=float, default=240.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = json.loads(args.child)
        kind = job.pop("kind")
        result = {"step": measure_step, "eval": measure_eval, "matmul": matmul_rate}[kind](**job)
        print(json.dumps(result))
        return

    rate = _run_child("matmul", threads=args.threads)["gflops"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"TensorFlow limited to {args.threads} threads")
    print(f"dense float32 matmul rate: {rate:.1f} GFLOP/s\n")
    if args.methods_only:
        methods_table(args)
        return
    if args.quick:
        configs = [("text", 50, 4), ("full", 50, 4)]
    else:
        configs = [("text", c, b) for c in (10, 50, 100) for b in (1, 4, 16)] + [("full", 50, 4)]
    training_table(configs, rate, args)
    evaluation_table([("text", 32), ("full", 32)] if args.quick else
                     [("text", 1), ("text", 32), ("full", 32)], rate, args)
    if args.bfloat16:
        bfloat16_table(args)
    if args.methods:
        methods_table(args)


if __name__ == "__main__":
    main()
