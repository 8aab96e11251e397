"""Tiny datasets in CoOp's layout for the protocol tests (random_tiny backbone, 32 px)."""

import os

from test_data_helpers import WNIDS
from test_data_helpers import write_class_folders
from test_data_helpers import write_classnames
from test_data_helpers import write_split_layout

PETS = ["abyssinian", "beagle", "bengal", "boxer", "chihuahua"]
CALTECH = ["airplane", "anchor", "ant", "barrel"]


def write_coop_data_root(root):
    """OxfordPets and Caltech101 (split files), ImageNet with V2 and Sketch, under `root`."""
    write_split_layout(
        os.path.join(root, "oxford_pets"), "images", "split_zhou_OxfordPets.json",
        [(name, (3, 1, 3)) for name in PETS], lambda name, part, i: f"{name}_{part}{i}.jpg",
    )
    write_split_layout(
        os.path.join(root, "caltech-101"), "101_ObjectCategories", "split_zhou_Caltech101.json",
        [(name, (2, 1, 2)) for name in CALTECH], lambda name, part, i: f"{name}/{part}{i}.jpg",
    )
    wnids = sorted(WNIDS)[:4]
    write_classnames(os.path.join(root, "imagenet", "classnames.txt"))
    write_class_folders(os.path.join(root, "imagenet", "images", "train"), {w: 3 for w in wnids}, ".JPEG")
    write_class_folders(os.path.join(root, "imagenet", "images", "val"), {w: 2 for w in wnids}, ".JPEG")
    v2 = os.path.join(root, "imagenetv2", "imagenetv2-matched-frequency-format-val")
    write_class_folders(v2, {str(i): 2 for i in range(5)}, ".jpeg")
    write_classnames(os.path.join(root, "imagenetv2", "classnames.txt"))
    write_class_folders(os.path.join(root, "imagenet-sketch", "images"), {w: 2 for w in WNIDS}, ".JPEG")
    return root
