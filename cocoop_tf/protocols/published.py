"""Published numbers (ViT-B/16, 16 shots, mean of 3 seeds), in percent.

Zero-shot CLIP, CoOp and CoCoOp from the CoCoOp paper (Zhou et al.,
"Conditional Prompt Learning for Vision-Language Models", CVPR 2022):
base-to-new from Table 1, cross-dataset transfer from Table 2, domain
generalisation from Table 3. KgCoOp from its paper's base-to-new table (Yao et
al., CVPR 2023); its transfer numbers are not included. MaPLe from its paper's
base-to-novel, cross-dataset and domain generalisation tables (Khattak et al.,
CVPR 2023). Each of these methods' eleven base-to-new rows average to the
11-dataset figures in `BASE_TO_NEW_AVERAGE` (checked by the tests).

PromptSRC from its paper's base-to-novel (Table 1), cross-dataset and
domain generalisation tables (Khattak et al., "Self-regulating Prompts:
Foundational Model Adaptation without Forgetting", ICCV 2023); its averages
are also those of the PromptSRC repository's README and project page. IVLP
has only its 11-dataset base-to-novel average, from the same README and
project page (the paper's baseline row), so results.md has no (paper) rows
for it. Keys are `load_dataset` names.
"""

# Where each method's numbers come from, as results.md names it.
SOURCES = {
    "zeroshot": "the CoCoOp paper",
    "coop": "the CoCoOp paper",
    "cocoop": "the CoCoOp paper",
    "kgcoop": "the KgCoOp paper (Yao et al., CVPR 2023)",
    "maple": "the MaPLe paper (Khattak et al., CVPR 2023)",
    "ivlp": "the PromptSRC paper (Khattak et al., ICCV 2023)",
    "promptsrc": "the PromptSRC paper (Khattak et al., ICCV 2023)",
}

# (base, new, H) per method.
BASE_TO_NEW = {
    "imagenet": {
        "zeroshot": (72.43, 68.14, 70.22), "coop": (76.47, 67.88, 71.92), "cocoop": (75.98, 70.43, 73.10),
        "kgcoop": (75.83, 69.96, 72.78), "maple": (76.66, 70.54, 73.47),
        "promptsrc": (77.60, 70.73, 74.01),
    },
    "caltech101": {
        "zeroshot": (96.84, 94.00, 95.40), "coop": (98.00, 89.81, 93.73), "cocoop": (97.96, 93.81, 95.84),
        "kgcoop": (97.72, 94.39, 96.03), "maple": (97.74, 94.36, 96.02),
        "promptsrc": (98.10, 94.03, 96.02),
    },
    "oxford_pets": {
        "zeroshot": (91.17, 97.26, 94.12), "coop": (93.67, 95.29, 94.47), "cocoop": (95.20, 97.69, 96.43),
        "kgcoop": (94.65, 97.76, 96.18), "maple": (95.43, 97.76, 96.58),
        "promptsrc": (95.33, 97.30, 96.30),
    },
    "stanford_cars": {
        "zeroshot": (63.37, 74.89, 68.65), "coop": (78.12, 60.40, 68.13), "cocoop": (70.49, 73.59, 72.01),
        "kgcoop": (71.76, 75.04, 73.36), "maple": (72.94, 74.00, 73.47),
        "promptsrc": (78.27, 74.97, 76.58),
    },
    "oxford_flowers": {
        "zeroshot": (72.08, 77.80, 74.83), "coop": (97.60, 59.67, 74.06), "cocoop": (94.87, 71.75, 81.71),
        "kgcoop": (95.00, 74.73, 83.65), "maple": (95.92, 72.46, 82.56),
        "promptsrc": (98.07, 76.50, 85.95),
    },
    "food101": {
        "zeroshot": (90.10, 91.22, 90.66), "coop": (88.33, 82.26, 85.19), "cocoop": (90.70, 91.29, 90.99),
        "kgcoop": (90.50, 91.70, 91.09), "maple": (90.71, 92.05, 91.38),
        "promptsrc": (90.67, 91.53, 91.10),
    },
    "fgvc_aircraft": {
        "zeroshot": (27.19, 36.29, 31.09), "coop": (40.44, 22.30, 28.75), "cocoop": (33.41, 23.71, 27.74),
        "kgcoop": (36.21, 33.55, 34.83), "maple": (37.44, 35.61, 36.50),
        "promptsrc": (42.73, 37.87, 40.15),
    },
    "sun397": {
        "zeroshot": (69.36, 75.35, 72.23), "coop": (80.60, 65.89, 72.51), "cocoop": (79.74, 76.86, 78.27),
        "kgcoop": (80.29, 76.53, 78.36), "maple": (80.82, 78.70, 79.75),
        "promptsrc": (82.67, 78.47, 80.52),
    },
    "dtd": {
        "zeroshot": (53.24, 59.90, 56.37), "coop": (79.44, 41.18, 54.24), "cocoop": (77.01, 56.00, 64.85),
        "kgcoop": (77.55, 54.99, 64.35), "maple": (80.36, 59.18, 68.16),
        "promptsrc": (83.37, 62.97, 71.75),
    },
    "eurosat": {
        "zeroshot": (56.48, 64.05, 60.03), "coop": (92.19, 54.74, 68.69), "cocoop": (87.49, 60.04, 71.21),
        "kgcoop": (85.64, 64.34, 73.48), "maple": (94.07, 73.23, 82.35),
        "promptsrc": (92.90, 73.90, 82.32),
    },
    "ucf101": {
        "zeroshot": (70.53, 77.50, 73.85), "coop": (84.69, 56.05, 67.46), "cocoop": (82.33, 73.45, 77.64),
        "kgcoop": (82.89, 76.67, 79.65), "maple": (83.00, 78.66, 80.77),
        "promptsrc": (87.10, 78.80, 82.74),
    },
}
BASE_TO_NEW_AVERAGE = {
    "zeroshot": (69.34, 74.22, 71.70), "coop": (82.69, 63.22, 71.66), "cocoop": (80.47, 71.69, 75.83),
    "kgcoop": (80.73, 73.60, 77.00), "maple": (82.28, 75.14, 78.55),
    # Average only (no rows in BASE_TO_NEW): the PromptSRC README's and project page's tables.
    "ivlp": (84.21, 71.79, 77.51), "promptsrc": (84.26, 76.10, 79.97),
}

# Accuracy per evaluated dataset of the ImageNet-trained models (16 shots).
CROSS_DATASET_TARGETS = (
    "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
)
CROSS_DATASET = {
    "coop": dict(zip(
        ("imagenet", *CROSS_DATASET_TARGETS, "average"),
        (71.51, 93.70, 89.14, 64.51, 68.71, 85.30, 18.47, 64.15, 41.92, 46.39, 66.55, 63.88),
    )),
    "cocoop": dict(zip(
        ("imagenet", *CROSS_DATASET_TARGETS, "average"),
        (71.02, 94.43, 90.14, 65.32, 71.88, 86.06, 22.94, 67.36, 45.73, 45.37, 68.21, 65.74),
    )),
    "maple": dict(zip(
        ("imagenet", *CROSS_DATASET_TARGETS, "average"),
        (70.72, 93.53, 90.49, 65.57, 72.23, 86.20, 24.74, 67.01, 46.49, 48.06, 68.69, 66.30),
    )),
    "promptsrc": dict(zip(
        ("imagenet", *CROSS_DATASET_TARGETS, "average"),
        (71.27, 93.60, 90.25, 65.70, 70.25, 86.15, 23.90, 67.10, 46.87, 45.50, 68.75, 65.81),
    )),
}
DOMAIN_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
_DOMAINS = ("imagenet", *DOMAIN_TARGETS)
DOMAIN_GENERALIZATION = {
    "zeroshot": dict(zip(_DOMAINS, (66.73, 60.83, 46.15, 47.77, 73.96))),
    "coop": dict(zip(_DOMAINS, (71.51, 64.20, 47.99, 49.71, 75.21))),
    "cocoop": dict(zip(_DOMAINS, (71.02, 64.07, 48.75, 50.63, 76.18))),
    "maple": dict(zip(_DOMAINS, (70.72, 64.07, 49.15, 50.90, 76.98))),
    "promptsrc": dict(zip(_DOMAINS, (71.27, 64.35, 49.55, 50.90, 77.80))),
}


def published_base_to_new(dataset):
    """`{method: {"base", "new", "h"}}` for one of the eleven datasets, else None."""
    table = BASE_TO_NEW.get(dataset)
    if table is None:
        return None
    return {m: dict(zip(("base", "new", "h"), v)) for m, v in table.items()}


def published_transfer(protocol, source):
    """`{method: {dataset: accuracy}}` of Table 2 or 3 when the source is ImageNet, else None."""
    if source != "imagenet":
        return None
    table = CROSS_DATASET if protocol == "cross-dataset" else DOMAIN_GENERALIZATION
    return {method: dict(values) for method, values in table.items()}
