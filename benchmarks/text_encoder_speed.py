"""Training-step time and peak memory of CoCoOp: full-length reference vs efficient path.

The backbone has ViT-B/16's text tower (12 layers, width 512, 8 heads, 77
positions, 512-d projection) with random weights; the frozen vision tower is
small (its cost is the same in both paths). Each configuration runs in its own
process, with TensorFlow limited to the requested CPU threads, in float32.

    python benchmarks/text_encoder_speed.py [--threads 2] [--quick]

Prints: the training-step table for C in {10, 50, 100} and B in {1, 4, 16},
the dense matmul rate of this machine and the time the efficient step's
FLOPs imply at that rate, and evaluation throughput at C = 1000.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

WIDTH, LAYERS, HEADS, MLP, CONTEXT, PROJECTION = 512, 12, 8, 2048, 77, 512
N_CTX = 4
WORDS = (
    "red tailed hawk golden retriever sports car space shuttle church mountain bike "
    "coffee mug african elephant great white shark rock beauty pomeranian airliner "
    "container ship espresso maker grey whale tabby cat barn spider park bench "
    "bell pepper strawberry volcano coral reef daisy yellow lady slipper"
).split()


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


def _backbone():
    from cocoop_tf.clip.backbone import CLIPArchitecture
    from cocoop_tf.clip.backbone import random_backbone

    architecture = CLIPArchitecture(
        image_size=32, patch_size=16, vision_width=64, vision_layers=1, vision_heads=1,
        vision_mlp_width=128, vocabulary_size=49408, context_length=CONTEXT,
        text_width=WIDTH, text_layers=LAYERS, text_heads=HEADS, text_mlp_width=MLP,
        projection_dim=PROJECTION,
    )
    backbone = random_backbone(architecture)
    backbone.trainable = False
    return backbone


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


def measure_step(mode, batch, num_classes, threads, repeats):
    """One configuration, in this process: seconds per training step, peak MB."""
    _setup(threads)
    import numpy as np
    import tensorflow as tf

    import cocoop_tf

    model = cocoop_tf.CoCoOp(_backbone(), classnames(num_classes))
    model.prompt_text_encoder.mode = mode
    optimizer = cocoop_tf.training.CoupledSGD(0.002)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, 32, 32, 3)), tf.float32)
    labels = tf.constant(np.arange(batch) % num_classes)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = model(images)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    # The peak includes the first step: later steps reuse the memory it took,
    # so sampling only after it would miss the activations.
    with PeakMemory() as memory:
        step()  # trace and warm up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step().numpy()
            times.append(time.perf_counter() - start)
    return {"seconds": float(np.median(times)), "peak_mb": memory.increase_mb}


def measure_eval(batch, num_classes, threads, repeats):
    """Images per second for evaluation (forward pass) of the efficient path."""
    _setup(threads)
    import numpy as np
    import tensorflow as tf

    import cocoop_tf

    model = cocoop_tf.CoCoOp(_backbone(), classnames(num_classes))
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, 32, 32, 3)), tf.float32)
    forward = tf.function(lambda: model(images))
    with PeakMemory() as memory:
        forward()  # trace and warm up
        start = time.perf_counter()
        for _ in range(repeats):
            forward().numpy()
        seconds = (time.perf_counter() - start) / repeats
    return {"images_per_second": batch / seconds, "peak_mb": memory.increase_mb}


def matmul_rate(threads):
    """Dense float32 matmul rate (GFLOP/s) at the text tower's typical shapes."""
    _setup(threads)
    import tensorflow as tf

    rates = []
    for rows, inner, outer in ((4096, WIDTH, MLP), (4096, MLP, WIDTH), (4096, WIDTH, WIDTH)):
        a = tf.random.normal((rows, inner))
        b = tf.random.normal((inner, outer))
        run = tf.function(lambda: tf.matmul(a, b))
        run()
        start = time.perf_counter()
        for _ in range(20):
            run().numpy()
        rates.append(2 * rows * inner * outer * 20 / (time.perf_counter() - start) / 1e9)
    return {"gflops": sum(rates) / len(rates)}


def efficient_step_flops(batch, num_classes):
    """Matmul FLOPs of one efficient training step (forward and input gradients).

    The backbone is frozen, so the backward pass computes input gradients
    only: about as many FLOPs as the forward pass.
    """
    import numpy as np

    from cocoop_tf.clip.prompts import tokenize_classnames

    ids = tokenize_classnames(classnames(num_classes), CONTEXT, N_CTX)
    name_tokens = int(np.max(np.argmax(ids, axis=-1)))  # tokens after the start token
    prefix = 1 + N_CTX
    dense_per_token = 2 * (4 * WIDTH * WIDTH + 2 * WIDTH * MLP)
    tokens = batch * (prefix + num_classes * name_tokens)
    attention = 4 * batch * num_classes * name_tokens * (prefix + name_tokens) * WIDTH
    attention += 4 * batch * prefix * prefix * WIDTH
    forward = LAYERS * (tokens * dense_per_token + attention)
    forward += 2 * batch * num_classes * WIDTH * PROJECTION
    return 2 * forward


def _run_child(kind, **kwargs):
    command = [sys.executable, __file__, "--child", json.dumps({"kind": kind, **kwargs})]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _reference_feasible(batch, num_classes, memory_limit_gb, time_limit_s, rate_gflops):
    """Skip reference runs that would exhaust memory or take many minutes."""
    sequences = batch * num_classes
    # Saved activations: about 12 tensors of [sequences, 77, 512] per layer, plus the MLP's 4x.
    memory_gb = sequences * CONTEXT * WIDTH * 4 * LAYERS * 16 / 2**30
    flops = 2 * LAYERS * sequences * CONTEXT * (2 * (4 * WIDTH * WIDTH + 2 * WIDTH * MLP))
    seconds = flops / (rate_gflops * 1e9)
    return memory_gb <= memory_limit_gb and seconds <= time_limit_s, memory_gb, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="C=50, B=4 and C=1000 only")
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
          f"TensorFlow limited to {args.threads} threads; float32")
    print(f"dense matmul rate: {rate:.1f} GFLOP/s\n")
    configs = [(50, 4)] if args.quick else [(c, b) for c in (10, 50, 100) for b in (1, 4, 16)]
    print("| C | B | reference step (s) | efficient step (s) | speed-up | reference peak (MB) "
          "| efficient peak (MB) | memory ratio | efficient FLOP-implied (s) | efficient / implied |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for num_classes, batch in configs:
        fast = _run_child("step", mode="efficient", batch=batch, num_classes=num_classes,
                          threads=args.threads, repeats=3)
        feasible, memory_gb, seconds = _reference_feasible(
            batch, num_classes, args.memory_limit_gb, args.time_limit_s, rate
        )
        if feasible:
            slow = _run_child("step", mode="reference", batch=batch, num_classes=num_classes,
                              threads=args.threads, repeats=1 if seconds > 20 else 3)
        else:
            slow = {"error": f"skipped: ~{memory_gb:.0f} GB, ~{seconds:.0f} s estimated"}
        implied = efficient_step_flops(batch, num_classes) / (rate * 1e9)
        if "error" in slow:
            ref_time = ref_mem = slow["error"]
            speedup = memory_ratio = "-"
        else:
            ref_time, ref_mem = f"{slow['seconds']:.3f}", f"{slow['peak_mb']:.0f}"
            speedup = f"{slow['seconds'] / fast['seconds']:.1f}x"
            memory_ratio = f"{fast['peak_mb'] / max(slow['peak_mb'], 1):.3f}"
        print(f"| {num_classes} | {batch} | {ref_time} | {fast['seconds']:.3f} | {speedup} | "
              f"{ref_mem} | {fast['peak_mb']:.0f} | {memory_ratio} | {implied:.3f} | "
              f"{fast['seconds'] / implied:.2f} |", flush=True)

    print("\nEvaluation, efficient path, C = 1000 classes:")
    print("| B | images/s | peak (MB) |")
    print("|---|---|---|")
    for batch in (1, 32):
        result = _run_child("eval", batch=batch, num_classes=1000, threads=args.threads, repeats=2)
        if "error" in result:
            print(f"| {batch} | {result['error']} | |")
        else:
            print(f"| {batch} | {result['images_per_second']:.2f} | {result['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
