"""Zero-shot CLIP, CoOp and CoCoOp base-to-new on the mini benchmark, with timings.

    python benchmarks/mini_benchmark_probe.py [--shots 16] [--epochs 10] [--lr 0.02] ...

Uses the shipped small CLIP (`load_clip("mini_clip")`) and the dataset
`load_dataset("mini_digits_animals")` exactly as a user would: few-shot base
classes through `to_tf_dataset(..., training=True)` (the paper's random
resized crop and flip), `paper_optimizer`, `model.fit`, and accuracy on the
base and new test splits. Prints one row per method and seed, the mean over
seeds, and the wall time of each method.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import cocoop_tf
from cocoop_tf.data import load_dataset

IMAGE_SIZE = 32


def harmonic_mean(base, new):
    return 2 * base * new / (base + new) if base + new else 0.0


def accuracy(model, dataset, batch_size):
    """Test accuracy of a model on one view of the dataset."""
    model.set_classnames(dataset.classnames)
    test = dataset.to_tf_dataset("test", batch_size, training=False, image_size=IMAGE_SIZE)
    if not model.compiled:
        model.compile()
    return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])


def build(method, clip, classnames, args):
    if method == "zeroshot":
        return cocoop_tf.ZeroShotCLIP(clip, classnames, template="a photo of a {}.")
    options = {"n_ctx": args.n_ctx, "ctx_init": args.ctx_init or None}
    if method == "coop":
        return cocoop_tf.CoOp(clip, classnames, **options)
    return cocoop_tf.CoCoOp(clip, classnames, reduction=args.reduction, **options)


def run(method, seed, clip, dataset, args):
    """Trains (unless zero-shot) on the base classes and returns (base, new) accuracy."""
    keras.utils.set_random_seed(seed)
    base = dataset.few_shot(args.shots, seed).subsample("base")
    new = dataset.subsample("new")
    model = build(method, clip, base.classnames, args)
    if method != "zeroshot":
        train = base.to_tf_dataset(
            "train", args.batch_size, training=True, image_size=IMAGE_SIZE, seed=seed,
            crop_scale=(args.crop_min, 1.0), flip=not args.no_flip,
        )
        steps = int(np.ceil(len(base.train) / args.batch_size))
        model.compile(
            optimizer=cocoop_tf.paper_optimizer(
                steps, epochs=args.epochs, lr=args.lr, warmup_epochs=args.warmup_epochs,
                warmup_lr=args.warmup_lr,
            )
        )
        model.fit(train, epochs=args.epochs, verbose=0)
    return accuracy(model, base, args.eval_batch_size), accuracy(model, new, args.eval_batch_size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["zeroshot", "coop", "cocoop"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batch-size", type=int, default=250)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--warmup-lr", type=float, default=1e-5)
    parser.add_argument("--n-ctx", type=int, default=4)
    parser.add_argument("--ctx-init", default="a photo of a")
    parser.add_argument("--reduction", type=int, default=16)
    parser.add_argument("--crop-min", type=float, default=0.08)
    parser.add_argument("--no-flip", action="store_true")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()

    clip = cocoop_tf.load_clip("mini_clip")
    dataset = load_dataset("mini_digits_animals", args.data_root)
    print(vars(args))
    print(f"{'method':9s} {'seed':>4s} {'base':>6s} {'new':>6s} {'H':>6s} {'time':>6s}")
    summary = {}
    for method in args.methods:
        rows = []
        for seed in args.seeds:
            start = time.perf_counter()
            base, new = run(method, seed, clip, dataset, args)
            seconds = time.perf_counter() - start
            rows.append((base, new, seconds))
            print(
                f"{method:9s} {seed:4d} {100 * base:6.2f} {100 * new:6.2f} "
                f"{100 * harmonic_mean(base, new):6.2f} {seconds:5.0f}s",
                flush=True,
            )
        base, new, seconds = np.mean(rows, axis=0)
        summary[method] = (base, new, harmonic_mean(base, new), np.sum([r[2] for r in rows]))
    print("\nmean over seeds: method base new H (total seconds)")
    for method, (base, new, h, seconds) in summary.items():
        print(f"{method:9s} {100 * base:6.2f} {100 * new:6.2f} {100 * h:6.2f} ({seconds:.0f}s)")


if __name__ == "__main__":
    main()
