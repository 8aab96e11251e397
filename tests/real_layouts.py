"""The paper's 15 datasets in miniature, in their real on-disk layouts.

Each writer reproduces, for a few real classes, what a user has under CoOp's
`$DATA` after following CoOp's DATASETS.md: the folder and image-folder
names, the real file naming, CoOp's split file (`{"train": [[path relative to
the image folder, label, class name], ...], "val": [...], "test": [...]}`)
or the index files CoOp reads instead, and files the real layout holds that
are not classes or are not read (Caltech's BACKGROUND_Google and Faces_easy,
Pets' annotations/, ImageNet-A/-R's README.txt, ...). Class names and their
order are those of CoOp's readers (KaiyangZhou/CoOp, datasets/*.py): the real
label indices restricted to the classes here, renumbered 0..n-1 in the same
order. Images are tiny noise JPEGs; files CoOp only reads to make a split (.mat
annotations) are placeholders.

    root = write_all_real_layouts(tmp_path)
    load_dataset("sun397", data_root=root).source.classnames
    # == REAL_CLASSNAMES["sun397"]
"""

import hashlib
import itertools
import json
import os

from test_data_helpers import write_classnames
from test_data_helpers import write_image
from test_data_helpers import write_split_layout

SIZE = (8, 8)

# --- ImageNet and its domain-shift sets ----------------------------------------

# CoOp's classnames.txt, "copied from CLIP" (DATASETS.md): the names of CLIP's
# notebooks/Prompt_Engineering_for_ImageNet.ipynb, so n03590841 is "carved
# pumpkin" there (WordNet: "jack-o'-lantern"). Sorted WordNet ids, as the file.
IMAGENET_WNIDS = {
    "n01443537": "goldfish",  # in ImageNet-R, not -A
    "n02085620": "Chihuahua",  # in both
    "n02099601": "Golden Retriever",  # in both
    "n03590841": "carved pumpkin",  # in ImageNet-A, not -R
    "n07742313": "Granny Smith apple",  # in ImageNet-R, not -A
    "n12057211": "yellow lady's slipper",  # in ImageNet-A, not -R
}
# Members of the 200 classes of each (hendrycks/natural-adv-examples eval.py
# thousand_k_to_200; hendrycks/imagenet-r eval.py imagenet_r_wnids).
IMAGENET_A_WNIDS = ["n02085620", "n02099601", "n03590841", "n12057211"]
IMAGENET_R_WNIDS = ["n01443537", "n02085620", "n02099601", "n07742313"]

# --- the other datasets: real class folders / file names -----------------------

# Raw names from the image file names, lowercased by CoOp (oxford_pets.py
# read_data); cat breeds' files start with a capital. Real class ids 1, 2, 10, 15, 37.
PETS_FILE_PREFIX = {
    "abyssinian": "Abyssinian",
    "american_bulldog": "american_bulldog",
    "british_shorthair": "British_Shorthair",
    "german_shorthaired": "german_shorthaired",
    "yorkshire_terrier": "yorkshire_terrier",
}
PETS_SPECIES = {"abyssinian": 1, "british_shorthair": 1}  # 1 cat, 2 dog

# Folders sorted case-sensitively (uppercase first), the two ignored ones
# dropped, then renamed (caltech101.py IGNORED, NEW_CNAMES; dtd.py
# read_and_split_data): real labels 0, 1, 3, 4, 18.
CALTECH_FOLDERS = {
    "face": "Faces",
    "leopard": "Leopards",
    "accordion": "accordion",
    "airplane": "airplanes",
    "car_side": "car_side",
}
CALTECH_IGNORED = ["BACKGROUND_Google", "Faces_easy"]

# cars_meta.mat names, the year moved first (stanford_cars.py read_data), in
# devkit order (0, 162, 163, 173, 184: SL-Class comes before E-Class there).
CARS_META_NAMES = [
    "AM General Hummer SUV 2000",
    "Mercedes-Benz SL-Class Coupe 2009",
    "Mercedes-Benz E-Class Sedan 2012",
    "Ram C/V Cargo Van Minivan 2012",
    "Tesla Model S Sedan 2012",
]

# cat_to_name.json names of labels 1, 2, 12, 16, 21.
FLOWERS = ["pink primrose", "hard-leaved pocket orchid", "colt's foot", "globe-flower", "fire lily"]

# Folders of images/, sorted: "cheese_plate" < "cheesecake" ("_" < "c").
FOOD = ["apple_pie", "cheese_plate", "cheesecake", "macaroni_and_cheese", "macarons"]

# variants.txt lines 1, 38, 73, 74, 100.
AIRCRAFT = ["707-320", "BAE 146-200", "F-16A/B", "F/A-18", "Yak-42"]
# The first image ids of 707-320 in the real images_variant_train/test.txt.
AIRCRAFT_REAL_IDS = {("707-320", "train"): ["1025794", "1340192", "0056978"],
                     ("707-320", "test"): ["0034309", "0034958"]}

# ClassName.txt entries (labels 0, 8, 25, 28, 29) and CoOp's names for them:
# the path without its letter, words reversed (sun397.py read_data).
SUN397_PATHS = {
    "abbey": "a/abbey",
    "outdoor apartment_building": "a/apartment_building/outdoor",
    "indoor badminton_court": "b/badminton_court/indoor",
    "exterior balcony": "b/balcony/exterior",
    "interior balcony": "b/balcony/interior",
}

# Folders of images/ (labels 0, 10, 29, 30, 31 of the 47).
DTD = ["banded", "dotted", "pleated", "polka-dotted", "porous"]

# Folders of 2750/ (labels 0, 1, 2, 6, 9) and CoOp's names (eurosat.py NEW_CNAMES).
EUROSAT_FOLDERS = {
    "Annual Crop Land": "AnnualCrop",
    "Forest": "Forest",
    "Herbaceous Vegetation Land": "HerbaceousVegetation",
    "Permanent Crop Land": "PermanentCrop",
    "Sea or Lake": "SeaLake",
}

# classInd.txt lines 1, 35, 36, 37, 101, renamed by CoOp ("_".join of
# re.findall("[A-Z][^A-Z]*", action), ucf101.py): the label order is
# classInd's (Hammering before HammerThrow), not the renamed names' sort.
# Values: the action as the video file names spell it ("HandStandPushups"
# in folder HandstandPushups is UCF101's own quirk).
UCF101_FILE_ACTIONS = {
    "Apply_Eye_Makeup": "ApplyEyeMakeup",
    "Hammering": "Hammering",
    "Hammer_Throw": "HammerThrow",
    "Handstand_Pushups": "HandStandPushups",
    "Yo_Yo": "YoYo",
}

IMAGENET_NAMES = list(IMAGENET_WNIDS.values())

REAL_CLASSNAMES = {
    "imagenet": IMAGENET_NAMES,
    "caltech101": list(CALTECH_FOLDERS),
    "oxford_pets": list(PETS_FILE_PREFIX),
    "stanford_cars": [" ".join([n.split()[-1], *n.split()[:-1]]) for n in CARS_META_NAMES],
    "oxford_flowers": FLOWERS,
    "food101": FOOD,
    "fgvc_aircraft": AIRCRAFT,
    "sun397": list(SUN397_PATHS),
    "dtd": DTD,
    "eurosat": list(EUROSAT_FOLDERS),
    "ucf101": list(UCF101_FILE_ACTIONS),
    "imagenetv2": IMAGENET_NAMES,
    "imagenet_sketch": IMAGENET_NAMES,
    "imagenet_a": [IMAGENET_WNIDS[w] for w in IMAGENET_A_WNIDS],
    "imagenet_r": [IMAGENET_WNIDS[w] for w in IMAGENET_R_WNIDS],
}

# The paper's zero-shot templates (CoOp trainers/zsclip.py CUSTOM_TEMPLATES).
PAPER_TEMPLATES = {
    "imagenet": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "oxford_pets": "a photo of a {}, a type of pet.",
    "stanford_cars": "a photo of a {}.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "food101": "a photo of {}, a type of food.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "sun397": "a photo of a {}.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenetv2": "a photo of a {}.",
    "imagenet_sketch": "a photo of a {}.",
    "imagenet_a": "a photo of a {}.",
    "imagenet_r": "a photo of a {}.",
}

TEST_ONLY = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")


def per_class_counts(name, counts):
    """`counts` for each class of `name`: one (train, val, test) for all, or one per class."""
    n = len(REAL_CLASSNAMES[name])
    if len(counts) == 3 and all(isinstance(c, int) for c in counts):
        return [tuple(counts)] * n
    counts = [tuple(c) for c in counts]
    if len(counts) != n:
        raise ValueError(f"{name} has {n} classes here; got {len(counts)} counts.")
    return counts


# --- writers ----------------------------------------------------------------------


def _split_dataset(folder, image_dir, split_file, names, counts, relpath):
    return write_split_layout(folder, image_dir, split_file, list(zip(names, counts)), relpath)


def _numbered(start=1):
    """relpath helper: a running number per key, as files are numbered per class."""
    counters = {}

    def next_number(key):
        counters.setdefault(key, itertools.count(start))
        return next(counters[key])

    return next_number


def _write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(f"{line}\n" for line in lines)


def _placeholder(path):
    """A file the real layout has and CoOp reads only to make its split (e.g. .mat)."""
    _write_lines(path, ["placeholder: not read once the split file exists"])


def _write_caltech101(folder, counts):
    number = _numbered()

    def relpath(name, part, i):
        cls = CALTECH_FOLDERS[name]
        return f"{cls}/image_{number(cls):04d}.jpg"

    _split_dataset(folder, "101_ObjectCategories", "split_zhou_Caltech101.json",
                   REAL_CLASSNAMES["caltech101"], counts, relpath)
    for k, ignored in enumerate(CALTECH_IGNORED):
        for i in range(2):
            path = os.path.join(folder, "101_ObjectCategories", ignored, f"image_{i + 1:04d}.jpg")
            write_image(path, seed=900 + 10 * k + i, size=SIZE)


def _write_oxford_pets(folder, counts):
    number = _numbered()
    names = REAL_CLASSNAMES["oxford_pets"]

    def relpath(name, part, i):
        return f"{PETS_FILE_PREFIX[name]}_{number(name)}.jpg"

    split = _split_dataset(folder, "images", "split_zhou_OxfordPets.json", names, counts, relpath)
    # annotations/: "<image> <class id> <species> <breed id>", ids from 1 (read_data).
    breed_ids, per_species = {}, {}
    for name in names:
        species = PETS_SPECIES.get(name, 2)
        per_species[species] = per_species.get(species, 0) + 1
        breed_ids[name] = (species, per_species[species])

    def lines(parts):
        out = []
        for part in parts:
            for path, label, name in split[part]:
                species, breed = breed_ids[name]
                out.append(f"{path[:-len('.jpg')]} {label + 1} {species} {breed}")
        return out

    _write_lines(os.path.join(folder, "annotations", "trainval.txt"), lines(["train", "val"]))
    _write_lines(os.path.join(folder, "annotations", "test.txt"), lines(["test"]))
    everything = sorted(lines(["train", "val", "test"]), key=lambda line: int(line.split()[1]))
    _write_lines(os.path.join(folder, "annotations", "list.txt"),
                 ["#Image CLASS-ID SPECIES BREED ID", *everything])
    for path, _, _ in split["train"][:2]:  # trimaps: PNGs, not images of a class
        write_image(os.path.join(folder, "annotations", "trimaps", path[:-4] + ".png"), size=SIZE)


def _write_stanford_cars(folder, counts):
    number = _numbered()

    def relpath(name, part, i):  # relative to the dataset folder itself
        images = "cars_test" if part == "test" else "cars_train"
        return f"{images}/{number(images):05d}.jpg"

    _split_dataset(folder, ".", "split_zhou_StanfordCars.json",
                   REAL_CLASSNAMES["stanford_cars"], counts, relpath)
    for path in ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat",
                 "cars_test_annos_withlabels.mat"):
        _placeholder(os.path.join(folder, path))


def _write_oxford_flowers(folder, counts):
    number = _numbered()

    def relpath(name, part, i):  # one flat folder, images numbered across classes
        return f"image_{number('jpg'):05d}.jpg"

    _split_dataset(folder, "jpg", "split_zhou_OxfordFlowers.json", FLOWERS, counts, relpath)
    with open(os.path.join(folder, "cat_to_name.json"), "w") as f:
        json.dump({str(label + 1): name for label, name in enumerate(FLOWERS)}, f)
    _placeholder(os.path.join(folder, "imagelabels.mat"))


def _write_food101(folder, counts):
    number = _numbered(1005649)

    def relpath(name, part, i):
        return f"{name}/{number('id')}.jpg"

    _split_dataset(folder, "images", "split_zhou_Food101.json", FOOD, counts, relpath)
    _write_lines(os.path.join(folder, "meta", "classes.txt"), FOOD)
    _write_lines(os.path.join(folder, "meta", "labels.txt"),
                 [n.replace("_", " ").capitalize() for n in FOOD])
    _write_lines(os.path.join(folder, "README.txt"), ["Food-101"])
    _write_lines(os.path.join(folder, "license_agreement.txt"), ["Food-101 license"])


def _write_fgvc_aircraft(folder, counts):
    """variants.txt and images_variant_<split>.txt ("<7-digit id> <variant>"), no split file."""
    _write_lines(os.path.join(folder, "variants.txt"), AIRCRAFT)
    generated = itertools.count(1100000, 7919)
    lines = {"train": [], "val": [], "test": []}
    seed = 0
    for variant, class_counts in zip(AIRCRAFT, counts):
        for part, n in zip(("train", "val", "test"), class_counts):
            real = AIRCRAFT_REAL_IDS.get((variant, part), [])
            for i in range(n):
                image_id = real[i] if i < len(real) else f"{next(generated):07d}"
                write_image(os.path.join(folder, "images", f"{image_id}.jpg"), seed=seed, size=SIZE)
                seed += 1
                lines[part].append(f"{image_id} {variant}")
    for part, rows in lines.items():  # grouped by variant, as the real files
        _write_lines(os.path.join(folder, f"images_variant_{part}.txt"), rows)
    _write_lines(os.path.join(folder, "images_variant_trainval.txt"), lines["train"] + lines["val"])


def _sun_image_name(k):
    letters = "abcdefghijklmnopqrstuvwxyz"
    digest = hashlib.sha1(str(k).encode()).digest()
    return "sun_" + "".join(letters[b % 26] for b in digest[:16]) + ".jpg"


def _write_sun397(folder, counts):
    number = _numbered()

    def relpath(name, part, i):
        return f"{SUN397_PATHS[name]}/{_sun_image_name(number('sun'))}"

    split = _split_dataset(folder, "SUN397", "split_zhou_SUN397.json",
                           list(SUN397_PATHS), counts, relpath)
    # The partition files CoOp made its split from: "/a/abbey", "/a/abbey/sun_....jpg".
    _write_lines(os.path.join(folder, "ClassName.txt"), [f"/{p}" for p in SUN397_PATHS.values()])
    _write_lines(os.path.join(folder, "Training_01.txt"),
                 [f"/{p}" for part in ("train", "val") for p, _, _ in split[part]])
    _write_lines(os.path.join(folder, "Testing_01.txt"), [f"/{p}" for p, _, _ in split["test"]])


def _write_dtd(folder, counts):
    number = _numbered()

    def relpath(name, part, i):
        return f"{name}/{name}_{number(name):04d}.jpg"

    split = _split_dataset(folder, "images", "split_zhou_DescribableTextures.json",
                           DTD, counts, relpath)
    _write_lines(os.path.join(folder, "labels", "train1.txt"), [p for p, _, _ in split["train"]])
    _placeholder(os.path.join(folder, "imdb", "imdb.mat"))


def _write_eurosat(folder, counts):
    number = _numbered()

    def relpath(name, part, i):
        cls = EUROSAT_FOLDERS[name]
        return f"{cls}/{cls}_{number(cls)}.jpg"

    _split_dataset(folder, "2750", "split_zhou_EuroSAT.json",
                   list(EUROSAT_FOLDERS), counts, relpath)


def _write_ucf101(folder, counts):
    """Middle frames, one per video: <renamed action>/v_<Action>_g<group>_c<clip>.jpg.

    Train and val come from trainlist01 (groups 8-25), test from testlist01 (1-7).
    """
    number = _numbered(0)

    def relpath(name, part, i):
        key = (name, "test" if part == "test" else "trainval")
        k = number(key)
        group = (1 if part == "test" else 8) + k // 4
        return f"{name}/v_{UCF101_FILE_ACTIONS[name]}_g{group:02d}_c{k % 4 + 1:02d}.jpg"

    _split_dataset(folder, "UCF-101-midframes", "split_zhou_UCF101.json",
                   list(UCF101_FILE_ACTIONS), counts, relpath)


def _write_imagenet(folder, counts):
    """images/train/<wnid>/<wnid>_<n>.JPEG, images/val/<wnid>/ILSVRC2012_val_<n>.JPEG.

    ImageNet has no val split of its own: CoOp tests on, and validates with,
    the official val set, so each class gets `train` images in train/ and
    `test` images in val/ (the `val` count is not used).
    """
    write_classnames(os.path.join(folder, "classnames.txt"), IMAGENET_WNIDS)
    val_number = itertools.count(293, 977)
    seed = 0
    for wnid, (n_train, _, n_test) in zip(IMAGENET_WNIDS, counts):
        for i in range(n_train):
            path = os.path.join(folder, "images", "train", wnid, f"{wnid}_{10026 + 37 * i}.JPEG")
            write_image(path, seed=seed, size=SIZE)
            seed += 1
        for i in range(n_test):
            name = f"ILSVRC2012_val_{next(val_number):08d}.JPEG"
            write_image(os.path.join(folder, "images", "val", wnid, name), seed=seed, size=SIZE)
            seed += 1


def _write_test_folders(folder, image_dir, classes, counts, file_name):
    """A test-only set: one folder per class, CoOp's copy of classnames.txt beside it."""
    write_classnames(os.path.join(folder, "classnames.txt"), IMAGENET_WNIDS)
    seed = 500
    for label, (class_folder, (_, _, n_test)) in enumerate(zip(classes, counts)):
        for i in range(n_test):
            write_image(os.path.join(folder, image_dir, class_folder, file_name(label, i)),
                        seed=seed, size=SIZE)
            seed += 1


def _write_imagenetv2(folder, counts):
    # Folders named by label index 0..999; files named by a SHA-1, ".jpeg".
    _write_test_folders(
        folder, "imagenetv2-matched-frequency-format-val", [str(i) for i in range(len(counts))],
        counts, lambda label, i: hashlib.sha1(f"{label}/{i}".encode()).hexdigest() + ".jpeg",
    )


def _write_imagenet_sketch(folder, counts):
    _write_test_folders(folder, "images", list(IMAGENET_WNIDS), counts,
                        lambda label, i: f"sketch_{i}.JPEG")


_ADVERSARIAL_GUESSES = ["digital clock", "doormat", "broccoli", "syringe", "stethoscope"]


def _imagenet_a_file(label, i):
    # "<score>_<prediction> _ <prediction>_<confidence>.jpg", with spaces.
    guess = _ADVERSARIAL_GUESSES[(label + i) % len(_ADVERSARIAL_GUESSES)]
    other = _ADVERSARIAL_GUESSES[(label + 2 * i + 1) % len(_ADVERSARIAL_GUESSES)]
    return f"0.{116 + 37 * label + i:06d}_{guess} _ {other}_0.{865662 - 1000 * i}.jpg"


_RENDITIONS = ["art", "cartoon", "sketch", "origami", "toy", "painting"]


def _write_imagenet_a(folder, counts):
    _write_test_folders(folder, "imagenet-a", IMAGENET_A_WNIDS, counts, _imagenet_a_file)
    _write_lines(os.path.join(folder, "imagenet-a", "README.txt"), ["ImageNet-A: 200 classes"])


def _write_imagenet_r(folder, counts):
    _write_test_folders(folder, "imagenet-r", IMAGENET_R_WNIDS, counts,
                        lambda label, i: f"{_RENDITIONS[i % len(_RENDITIONS)]}_{i}.jpg")
    _write_lines(os.path.join(folder, "imagenet-r", "README.txt"), ["ImageNet-R: 200 classes"])


# name: (folder under $DATA, writer)
_WRITERS = {
    "imagenet": ("imagenet", _write_imagenet),
    "caltech101": ("caltech-101", _write_caltech101),
    "oxford_pets": ("oxford_pets", _write_oxford_pets),
    "stanford_cars": ("stanford_cars", _write_stanford_cars),
    "oxford_flowers": ("oxford_flowers", _write_oxford_flowers),
    "food101": ("food-101", _write_food101),
    "fgvc_aircraft": ("fgvc_aircraft", _write_fgvc_aircraft),
    "sun397": ("sun397", _write_sun397),
    "dtd": ("dtd", _write_dtd),
    "eurosat": ("eurosat", _write_eurosat),
    "ucf101": ("ucf101", _write_ucf101),
    "imagenetv2": ("imagenetv2", _write_imagenetv2),
    "imagenet_sketch": ("imagenet-sketch", _write_imagenet_sketch),
    "imagenet_a": ("imagenet-adversarial", _write_imagenet_a),
    "imagenet_r": ("imagenet-rendition", _write_imagenet_r),
}

REAL_FOLDERS = {name: folder for name, (folder, _) in _WRITERS.items()}


def write_real_layout(root, name, counts=(2, 1, 2)):
    """Writes dataset `name` under `root` (CoOp's $DATA) in its real layout.

    Args:
        root: the data root.
        name: a key of `REAL_CLASSNAMES` (the project's benchmark names).
        counts: images per class for (train, val, test), or one such triple
            per class in label order. Test-only sets use the test count;
            ImageNet puts the test count in its val/ folder (see
            `_write_imagenet`).

    Returns:
        The dataset folder written, `<root>/<CoOp's folder name>`.
    """
    folder_name, writer = _WRITERS[name]
    folder = os.path.join(os.fspath(root), folder_name)
    writer(folder, per_class_counts(name, counts))
    return folder


def write_all_real_layouts(root, counts=(2, 1, 2)):
    """All 15 datasets under one `root`; returns `root`."""
    for name in _WRITERS:
        write_real_layout(root, name, counts)
    return root
