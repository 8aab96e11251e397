"""The paper's datasets: names, CoOp folder layouts, zero-shot templates.

Facts from the CoOp repository (DATASETS.md and its dataset readers) and the
CoCoOp paper. Every dataset folder lies under one root (CoOp's `$DATA`).
"""

import dataclasses
import re

COOP_DATASETS_URL = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"

DEFAULT_TEMPLATE = "a photo of a {}."

# CoOp's renamed EuroSAT classes; its split file already carries the new names.
EUROSAT_CLASSNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One dataset of the paper and where CoOp's layout keeps it.

    Args:
        name: the name `load_dataset` takes, e.g. `"oxford_pets"`.
        title: CoOp's name for it, e.g. `"OxfordPets"` (also accepted).
        heading: its section in CoOp's DATASETS.md.
        folder: its folder under the data root.
        layout: how the folder is read: `"split"` (a `split_zhou_*.json`
            file), `"aircraft"` (FGVC-Aircraft's variant files),
            `"imagenet"` (`images/train|val/<wnid>/` and `classnames.txt`),
            `"wnid_folders"` (one folder per WordNet id, test only) or
            `"index_folders"` (one folder per label index, test only).
        image_dir: the image folder inside `folder` (paths in the split
            file are relative to it).
        template: the zero-shot CLIP prompt template.
        split_file: the split file inside `folder`, for the "split" layout.
        tfds: the TensorFlow Datasets builder of the same data, if any.
    """

    name: str
    title: str
    heading: str
    folder: str
    layout: str
    image_dir: str
    template: str
    split_file: str = None
    tfds: str = None

    @property
    def docs(self):
        """The DATASETS.md section that says how to prepare the folder."""
        return f"{COOP_DATASETS_URL}#{self.heading.lower()}"

    def required_paths(self):
        """The paths, relative to `folder`, that must exist."""
        paths = [self.image_dir]
        if self.split_file:
            paths.append(self.split_file)
        if self.layout == "aircraft":
            paths += ["variants.txt"]
            paths += [f"images_variant_{s}.txt" for s in ("train", "val", "test")]
        if self.layout == "imagenet":
            paths = [f"{self.image_dir}/train", f"{self.image_dir}/val", "classnames.txt"]
        return paths


def _split(name, title, heading, folder, image_dir, template, tfds=None):
    return Benchmark(name, title, heading, folder, "split", image_dir, template,
                     f"split_zhou_{title}.json", tfds)


_IMAGENET_SHIFTS = [
    Benchmark("imagenetv2", "ImageNetV2", "ImageNetV2", "imagenetv2", "index_folders",
              "imagenetv2-matched-frequency-format-val", DEFAULT_TEMPLATE, tfds="imagenet_v2"),
    Benchmark("imagenet_sketch", "ImageNetSketch", "ImageNet-Sketch", "imagenet-sketch",
              "wnid_folders", "images", DEFAULT_TEMPLATE, tfds="imagenet_sketch"),
    # ImageNet-A and -R hold 200 of the 1000 classes: the folders present.
    Benchmark("imagenet_a", "ImageNetA", "ImageNet-A", "imagenet-adversarial", "wnid_folders",
              "imagenet-a", DEFAULT_TEMPLATE, tfds="imagenet_a"),
    Benchmark("imagenet_r", "ImageNetR", "ImageNet-R", "imagenet-rendition", "wnid_folders",
              "imagenet-r", DEFAULT_TEMPLATE, tfds="imagenet_r"),
]

BENCHMARKS = {
    b.name: b
    for b in [
        Benchmark("imagenet", "ImageNet", "ImageNet", "imagenet", "imagenet", "images",
                  DEFAULT_TEMPLATE, tfds="imagenet2012"),
        # The split file already leaves out BACKGROUND_Google and Faces_easy.
        _split("caltech101", "Caltech101", "Caltech101", "caltech-101", "101_ObjectCategories",
               DEFAULT_TEMPLATE, "caltech101"),
        _split("oxford_pets", "OxfordPets", "OxfordPets", "oxford_pets", "images",
               "a photo of a {}, a type of pet.", "oxford_iiit_pet"),
        # Paths in this split file are relative to the dataset folder itself.
        _split("stanford_cars", "StanfordCars", "StanfordCars", "stanford_cars", ".",
               DEFAULT_TEMPLATE, "cars196"),
        _split("oxford_flowers", "OxfordFlowers", "Flowers102", "oxford_flowers", "jpg",
               "a photo of a {}, a type of flower.", "oxford_flowers102"),
        _split("food101", "Food101", "Food101", "food-101", "images",
               "a photo of {}, a type of food.", "food101"),
        Benchmark("fgvc_aircraft", "FGVCAircraft", "FGVCAircraft", "fgvc_aircraft", "aircraft",
                  "images", "a photo of a {}, a type of aircraft."),
        _split("sun397", "SUN397", "SUN397", "sun397", "SUN397", DEFAULT_TEMPLATE, "sun397"),
        _split("dtd", "DescribableTextures", "DTD", "dtd", "images", "{} texture.", "dtd"),
        _split("eurosat", "EuroSAT", "EuroSAT", "eurosat", "2750",
               "a centered satellite photo of {}.", "eurosat"),
        # Middle frames of the videos; TFDS's ucf101 holds videos, so no builder here.
        _split("ucf101", "UCF101", "UCF101", "ucf101", "UCF-101-midframes",
               "a photo of a person doing {}."),
        *_IMAGENET_SHIFTS,
    ]
}


def _normalize(name):
    return re.sub(r"[^a-z0-9]", "", name.lower())


_ALIASES = {}
for _b in BENCHMARKS.values():
    for _alias in (_b.name, _b.title, _b.heading, _b.folder):
        _ALIASES.setdefault(_normalize(_alias), _b)
_ALIASES.setdefault("flowers102", BENCHMARKS["oxford_flowers"])


def find_benchmark(name):
    """The benchmark a name refers to, or None.

    Case, `_` and `-` are ignored, and CoOp's names are accepted:
    `"oxford_pets"`, `"OxfordPets"` and `"oxford-pets"` are the same.

    Args:
        name: a dataset name.

    Returns:
        A `Benchmark`, or None when the name is not one of the paper's.
    """
    return _ALIASES.get(_normalize(name))


def find_tfds_benchmark(builder_name):
    """The benchmark whose data a TFDS builder holds (`"eurosat/rgb"` -> eurosat), or None."""
    base = builder_name.split(":")[0].split("/")[0]
    for benchmark in BENCHMARKS.values():
        if benchmark.tfds == base:
            return benchmark
    return None
