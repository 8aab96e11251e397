"""Few-shot and base/new views: counts, seeds, the reference sampler, records."""

import collections
import json
import os
import random
import warnings

import pytest
from test_data_helpers import write_image
from test_data_helpers import write_split_layout

from cocoop_tf.data import load_dataset
from cocoop_tf.data import sample_few_shot
from cocoop_tf.data import subset_labels

NAMES = ["banded", "blotchy", "braided", "bubbly", "bumpy"]
# (train, val, test) images per class; "braided" has fewer than 4 train images.
COUNTS = [(8, 5, 2), (6, 6, 2), (2, 1, 2), (7, 4, 1), (9, 5, 3)]


@pytest.fixture
def dtd(tmp_path):
    write_split_layout(
        tmp_path / "dtd", "images", "split_zhou_DescribableTextures.json",
        list(zip(NAMES, COUNTS)), lambda n, s, i: f"{n}/{n}_{s}_{i:04d}.jpg",
    )
    return tmp_path


def per_class(items):
    return dict(sorted(collections.Counter(item.label for item in items).items()))


def dassl_reference(train, val, shots, seed):
    """CoOp/Dassl as they run: global `random` seeded once, train then val."""
    random.seed(seed)
    out = []
    for items, k in ((train, shots), (val, min(shots, 4))):
        tracker = collections.defaultdict(list)
        for item in items:
            tracker[item.label].append(item)
        picked = []
        for _, group in tracker.items():
            picked.extend(random.sample(group, k) if len(group) >= k else group)
        out.append(picked)
    return out


@pytest.mark.filterwarnings("ignore:.*fewer than 4 val")
def test_few_shot_counts_and_distinct_images(dtd):
    ds = load_dataset("dtd", data_root=dtd)
    shots = ds.few_shot(4, seed=1)
    with pytest.warns(UserWarning, match=r"dtd: 1 of the 5 classes have fewer than 4 train.*: braided \(2\)\."):
        assert per_class(shots.train) == {0: 4, 1: 4, 2: 2, 3: 4, 4: 4}
    assert per_class(shots.val) == {0: 4, 1: 4, 2: 1, 3: 4, 4: 4}
    assert shots.test == ds.test
    assert len({i.path for i in shots.train}) == len(shots.train)
    assert set(shots.train) <= set(ds.train) and set(shots.val) <= set(ds.val)
    two = ds.few_shot(2, seed=1)
    with pytest.warns(UserWarning, match="fewer than 2 val images"):
        assert per_class(two.val) == {0: 2, 1: 2, 2: 1, 3: 2, 4: 2}  # val: min(K, 4)


def test_shortfall_warning_names_the_classes_and_splits_in_use(dtd):
    """Base-to-new trains the base classes on train images: only those are reported, once."""
    # braided (label 2) is base, with 2 train and 1 val images
    for compose in (lambda ds: ds.few_shot(4, seed=1).subsample("base"),
                    lambda ds: ds.subsample("base").few_shot(4, seed=1)):
        ds = load_dataset("dtd", data_root=dtd)
        view = compose(ds)
        with pytest.warns(UserWarning) as caught:
            view.train, view.train, view.test, repr(view)
        assert [str(w.message) for w in caught] == [
            "dtd: 1 of the 3 base classes have fewer than 4 train images and use all they have "
            "(4-shot view, seed 1): braided (2)."
        ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # The same view of the same dataset made again, as a run does to check, then to train: said once.
        compose(ds).without(["elsewhere.jpg"]).train
        # The new classes have all their images; a view not read says nothing.
        new = ds.few_shot(4, seed=1).subsample("new")
        new.train, new.val, new.test
        ds.few_shot(8, seed=1).subsample("base").without([])
    with pytest.warns(UserWarning, match=r"1 of the 3 base classes have fewer than 4 val images .*braided \(1\)"):
        ds.few_shot(4, seed=1).subsample("base").val
    with pytest.warns(UserWarning, match=r"fewer than 4 train images .*seed 2\): braided \(2\)"):
        ds.few_shot(4, seed=2).subsample("base").train  # another seed: another choice, reported


@pytest.mark.filterwarnings("ignore:.*fewer than")
def test_seed_determinism_and_difference(dtd):
    first = load_dataset("dtd", data_root=dtd).few_shot(3, seed=1)
    again = load_dataset("dtd", data_root=dtd).few_shot(3, seed=1)
    other = load_dataset("dtd", data_root=dtd).few_shot(3, seed=2)
    assert first.train == again.train and first.val == again.val
    assert first.train != other.train


@pytest.mark.filterwarnings("ignore:.*fewer than")
@pytest.mark.parametrize("shots,seed", [(1, 1), (3, 2), (4, 3), (16, 1)])
def test_matches_the_reference_sampler(dtd, shots, seed):
    ds = load_dataset("dtd", data_root=dtd)
    expected_train, expected_val = dassl_reference(ds.train, ds.val, shots, seed)
    chosen = ds.few_shot(shots, seed)
    assert chosen.train == expected_train and chosen.val == expected_val


@pytest.mark.filterwarnings("ignore:.*fewer than")
def test_known_choice_for_seed_1(dtd):
    # Pinned so that a change of the sampler (or of Python's random) shows.
    chosen = load_dataset("dtd", data_root=dtd).few_shot(2, seed=1)
    assert [os.path.basename(i.path) for i in chosen.train] == [
        "banded_train_0002.jpg", "banded_train_0004.jpg",
        "blotchy_train_0000.jpg", "blotchy_train_0002.jpg",
        "braided_train_0000.jpg", "braided_train_0001.jpg",
        "bubbly_train_0006.jpg", "bubbly_train_0003.jpg",
        "bumpy_train_0007.jpg", "bumpy_train_0006.jpg",
    ]


def test_classes_visited_in_order_of_first_appearance():
    from cocoop_tf.data import Item

    items = [Item(f"{i}.jpg", label) for i, label in enumerate([2, 0, 2, 1, 0, 2, 1, 0])]
    chosen, short = sample_few_shot(items, 2, random.Random(5))
    assert [i.label for i in chosen] == [2, 2, 0, 0, 1, 1] and short == []
    rng = random.Random(5)
    expected = rng.sample([items[0], items[2], items[5]], 2) + rng.sample(
        [items[1], items[4], items[7]], 2) + rng.sample([items[3], items[6]], 2)
    assert chosen == expected


@pytest.mark.filterwarnings("ignore:.*fewer than")
def test_record_file_is_written_and_read_back(dtd, tmp_path):
    ds = load_dataset("dtd", data_root=dtd)
    out = tmp_path / "run"
    chosen = ds.few_shot(3, seed=1, cache_dir=out)
    path = out / "dtd_shot_3-seed_1.json"
    record = json.loads(path.read_text())
    assert (record["dataset"], record["shots"], record["seed"]) == ("dtd", 3, 1)
    assert record["train"][0][0].startswith("banded/")  # relative to the image folder
    assert [r[1] for r in record["train"]] == [i.label for i in chosen.train]
    assert [r[2] for r in record["val"]] == [NAMES[i.label] for i in chosen.val]

    # The file is what counts: edit it and the view follows.
    record["train"][0] = ["banded/banded_train_0007.jpg", 0, "banded"]
    path.write_text(json.dumps(record))
    replayed = ds.few_shot(3, seed=1, cache_dir=out)
    assert os.path.basename(replayed.train[0].path) == "banded_train_0007.jpg"
    assert replayed.train[1:] == chosen.train[1:] and replayed.val == chosen.val

    record["train"][0] = ["banded/missing.jpg", 0, "banded"]
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="missing.jpg.*changed since"):
        ds.few_shot(3, seed=1, cache_dir=out)
    record["seed"] = 7
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="does not record a 3-shot choice with seed 1"):
        ds.few_shot(3, seed=1, cache_dir=out)


def test_base_new_rule_and_relabelling(dtd):
    assert list(subset_labels(5, "base")) == [0, 1, 2] and list(subset_labels(5, "new")) == [3, 4]
    assert list(subset_labels(4, "base")) == [0, 1] and list(subset_labels(1, "new")) == []
    ds = load_dataset("dtd", data_root=dtd)
    base, new = ds.subsample("base"), ds.subsample("new")
    assert base.classnames == NAMES[:3] and new.classnames == NAMES[3:]
    assert base.num_classes == 3 and new.num_classes == 2
    for split in ("train", "val", "test"):
        full = ds.items(split)
        assert base.items(split) == [i for i in full if i.label < 3]
        assert new.items(split) == [i._replace(label=i.label - 3) for i in full if i.label >= 3]
    assert ds.subsample("all").train == ds.train


@pytest.mark.filterwarnings("ignore:.*fewer than")
def test_views_compose_in_either_order(dtd):
    ds = load_dataset("dtd", data_root=dtd)
    a = ds.few_shot(2, seed=3).subsample("new")
    b = ds.subsample("new").few_shot(2, seed=3)
    assert a.train == b.train and a.val == b.val and a.test == b.test
    assert a.classnames == b.classnames == NAMES[3:]
    assert per_class(a.train) == {0: 2, 1: 2}
    # Sampling ran over all classes first: the same images as the full view's.
    full = ds.few_shot(2, seed=3)
    assert [i.path for i in a.train] == [i.path for i in full.train if i.label >= 3]
    assert "2-shot seed 3, new" in repr(a) and "2 classes" in repr(a)


def test_view_errors(dtd):
    ds = load_dataset("dtd", data_root=dtd)
    with pytest.raises(ValueError, match="shots must be an integer >= 1"):
        ds.few_shot(0, seed=1)
    with pytest.raises(ValueError, match="seed must be an integer"):
        ds.few_shot(2, seed="1")
    with pytest.raises(ValueError, match="subset must be one of"):
        ds.subsample("novel")
    with pytest.raises(ValueError, match="already the 'base' view"):
        ds.subsample("base").subsample("new")
    shots = ds.few_shot(4, seed=1)
    with pytest.raises(ValueError, match="already a 4-shot view"):
        shots.few_shot(2, seed=1)
    with pytest.raises(ValueError, match="Unknown split 'valid'"):
        ds.items("valid")


def test_few_shot_of_an_image_folder(tmp_path):
    for name, n in {"cat": 10, "dog": 12}.items():
        for i in range(n):
            write_image(tmp_path / "pets" / name / f"{i}.png", seed=i)
    ds = load_dataset(tmp_path / "pets")
    chosen = ds.few_shot(4, seed=1, cache_dir=tmp_path / "out")
    assert per_class(chosen.train) == {0: 4, 1: 4}
    with pytest.warns(UserWarning, match="2 of the 2 classes have fewer than 4 val images"):
        assert per_class(chosen.val) == {0: 2, 1: 2}  # all the val images they have (20%)
    assert (tmp_path / "out" / "pets_shot_4-seed_1.json").exists()
