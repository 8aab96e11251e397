"""tf.data pipelines: shapes, pixel range, transforms, augmentation, decoding, errors."""

import numpy as np
import pytest
import tensorflow as tf
from test_data_helpers import cmyk_jpeg
from test_data_helpers import write_image

from cocoop_tf.data import decode_image
from cocoop_tf.data import load_dataset
from cocoop_tf.data import random_horizontal_flip
from cocoop_tf.data import resize_and_center_crop
from cocoop_tf.data.transforms import load_image
from cocoop_tf.data.transforms import random_crop_window


def collect(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


@pytest.fixture
def folder(tmp_path):
    """train/ and test/ folders; 3 classes of noise images (JPEG and PNG)."""
    seed = 0
    for split, n in (("train", 4), ("test", 2)):
        for name in ("ant", "bee", "cat"):
            for i in range(n):
                ext = ".png" if i % 2 else ".jpg"
                write_image(tmp_path / "d" / split / name / f"{i}{ext}", seed=seed, size=(24, 32))
                seed += 1
    return tmp_path / "d"


def test_eval_pipeline_is_the_eval_transform_in_item_order(folder):
    ds = load_dataset(folder)
    data = ds.to_tf_dataset("test", batch_size=4, training=False, image_size=16)
    shapes = [tuple(x.shape) for x, _ in data]
    assert shapes == [(4, 16, 16, 3), (2, 16, 16, 3)]
    images, labels = collect(data)
    assert images.dtype == np.float32
    assert labels.dtype == np.int32 and labels.tolist() == [i.label for i in ds.test]
    expected = np.stack([resize_and_center_crop(load_image(i.path), 16).numpy() for i in ds.test])
    np.testing.assert_allclose(images, expected, atol=1e-3)
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 200


def test_training_output_shapes_and_range(folder):
    data = load_dataset(folder).to_tf_dataset("train", 5, training=True, image_size=20, seed=0)
    batches = list(data)
    assert [tuple(x.shape) for x, _ in batches] == [(5, 20, 20, 3), (5, 20, 20, 3), (2, 20, 20, 3)]
    images = np.concatenate([x.numpy() for x, _ in batches])
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 255
    assert sorted(np.concatenate([y.numpy() for _, y in batches]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    dropped = load_dataset(folder).to_tf_dataset("train", 5, True, 20, drop_remainder=True)
    assert [int(x.shape[0]) for x, _ in dropped] == [5, 5]


def test_default_size_is_224(folder):
    x, y = next(iter(load_dataset(folder).to_tf_dataset("train", 2, training=True)))
    assert x.shape == (2, 224, 224, 3) and y.shape == (2,)


def test_augmentation_varies_between_images_and_epochs(tmp_path):
    # Eight copies of one photo: every output differs only by augmentation.
    source = write_image(tmp_path / "one.jpg", seed=3, size=(30, 40))
    for i in range(8):
        (tmp_path / "same" / "x").mkdir(parents=True, exist_ok=True)
        (tmp_path / "same" / "x" / f"{i}.jpg").write_bytes(open(source, "rb").read())
    ds = load_dataset(tmp_path / "same", split_file=None)
    data = ds.to_tf_dataset("train", 16, training=True, image_size=12, seed=5)
    first, _ = collect(data)
    second, _ = collect(data)
    assert len(first) == len(ds.train) == 4  # 50% of 8
    flat = first.reshape(len(first), -1)
    assert all(not np.allclose(flat[i], flat[j]) for i in range(4) for j in range(i + 1, 4))
    assert not np.allclose(first, second)
    plain = resize_and_center_crop(load_image(source), 12).numpy()
    assert not any(np.allclose(image, plain, atol=1) for image in first)


def test_deterministic_mode_repeats_and_seeds_differ(folder):
    ds = load_dataset(folder)

    def run(seed, epochs=1):
        data = ds.to_tf_dataset("train", 4, training=True, image_size=12, seed=seed, deterministic=True)
        return [collect(data) for _ in range(epochs)]

    (a1, la1), (a2, la2) = run(1, epochs=2)
    (b1, lb1), = run(1)
    (c1, lc1), = run(2)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(la1, lb1)
    assert not np.allclose(a1, c1)
    assert not np.allclose(a1, a2)  # a new epoch, new draws


def test_fixed_pipeline_repeats_every_pass(folder):
    data = load_dataset(folder).to_tf_dataset(
        "train", 4, training=True, image_size=12, seed=3, deterministic=True,
        reshuffle_each_iteration=False,
    )
    (a, la), (b, lb) = collect(data), collect(data)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    other = load_dataset(folder).to_tf_dataset(
        "train", 4, training=True, image_size=12, seed=4, deterministic=True,
        reshuffle_each_iteration=False,
    )
    assert not np.allclose(collect(other)[0], a)  # still a function of the seed


def test_training_order_is_shuffled_every_epoch(tmp_path):
    for label in range(4):
        for i in range(6):
            write_image(tmp_path / "d" / "train" / f"c{label}" / f"{i}.png", value=40 * label)
    (tmp_path / "d" / "test").mkdir()
    data = load_dataset(tmp_path / "d").to_tf_dataset("train", 24, training=True, image_size=4, seed=0)
    orders = [tuple(collect(data)[1]) for _ in range(3)]
    assert len(set(orders)) == 3
    assert orders[0] != tuple(sorted(orders[0]))
    # Each image still comes with its own label (constant value 40 * label).
    images, labels = collect(data)
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 40 * labels, atol=0.5)


def test_labels_and_images_follow_the_new_view(tmp_path):
    for label in range(5):
        for i in range(3):
            write_image(tmp_path / "d" / "train" / f"c{label}" / f"{i}.png", value=40 * label)
            write_image(tmp_path / "d" / "test" / f"c{label}" / f"{i}.png", value=40 * label)
    new = load_dataset(tmp_path / "d").subsample("new")
    for training in (True, False):
        images, labels = collect(new.to_tf_dataset("test", 4, training=training, image_size=6))
        assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
        np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 40 * (labels + 3), atol=0.5)


def test_decodes_grey_alpha_cmyk_and_png(tmp_path):
    root = tmp_path / "kinds" / "test"
    write_image(root / "a" / "grey.png", kind="grey", value=9)
    write_image(root / "b" / "grey.jpg", kind="grey", value=77)
    write_image(root / "c" / "rgba.png", kind="rgba", value=200)
    (root / "d").mkdir(parents=True)
    (root / "d" / "cmyk.jpg").write_bytes(cmyk_jpeg(255, 128, 64, 200))
    for name in "abcd":  # train/ names the classes; an empty class folder is refused
        write_image(tmp_path / "kinds" / "train" / name / "0.jpg")
    ds = load_dataset(tmp_path / "kinds")
    images, labels = collect(ds.to_tf_dataset("test", 4, training=False, image_size=8))
    means = images.mean(axis=(1, 2))
    np.testing.assert_allclose(means[0], [9, 9, 9], atol=0.5)
    np.testing.assert_allclose(means[1], [77, 77, 77], atol=2)
    np.testing.assert_allclose(means[2], [200, 200, 200], atol=0.5)
    # Adobe (inverted) CMYK: R = C * K / 255, ...
    np.testing.assert_allclose(means[3], [200, 100, 50], atol=2)


def test_decodes_webp_lossy_lossless_and_with_alpha_as_pillow_does(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (6, 10, 4), dtype=np.uint8)
    root = tmp_path / "webp" / "test"
    variants = {"a": ("RGB", {}), "b": ("RGB", {"lossless": True}), "c": ("RGBA", {}), "d": ("RGBA", {"lossless": True})}
    for name, (mode, options) in variants.items():
        (root / name).mkdir(parents=True)
        Image.fromarray(pixels, "RGBA").convert(mode).save(root / name / "0.WebP", "WEBP", **options)
        write_image(tmp_path / "webp" / "train" / name / "0.jpg")
    ds = load_dataset(tmp_path / "webp")
    assert [item.path.endswith("0.WebP") for item in ds.test] == [True] * 4
    decoded = [next(iter(tf.data.Dataset.from_tensors(tf.io.read_file(i.path)).map(decode_image))).numpy()
               for i in ds.test]
    for image, item in zip(decoded, ds.test):
        expected = np.asarray(Image.open(item.path).convert("RGB"))  # alpha dropped, as for PNG
        assert image.shape == (6, 10, 3) and (image == expected).all(), item.path
    images, labels = collect(ds.to_tf_dataset("test", 4, training=False, image_size=6))
    assert images.shape == (4, 6, 6, 3) and labels.tolist() == [0, 1, 2, 3]


def make_with_corrupt(tmp_path):
    for i in range(3):
        write_image(tmp_path / "c" / "train" / "x" / f"{i}.jpg", seed=i)
        write_image(tmp_path / "c" / "test" / "x" / f"{i}.jpg", seed=i)
    (tmp_path / "c" / "test" / "x" / "1.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return load_dataset(tmp_path / "c")


def test_corrupt_image_stops_with_its_name(tmp_path):
    ds = make_with_corrupt(tmp_path)
    for training in (False, True):
        # The advice names the option for both kinds of user.
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"Cannot decode.*x/1\.jpg.*--skip-corrupt on the command line, skip_corrupt=True in Python"):
            collect(ds.to_tf_dataset("test", 2, training=training, image_size=8))


def test_skip_corrupt_warns_with_its_name(tmp_path, capfd):
    ds = make_with_corrupt(tmp_path)
    images, labels = collect(ds.to_tf_dataset("test", 2, False, 8, skip_corrupt=True))
    assert len(images) == 2 and labels.tolist() == [0, 0]
    assert "skipping the image file" in capfd.readouterr().err.replace("\n", " ")
    expected = [resize_and_center_crop(load_image(ds.test[i].path), 8).numpy() for i in (0, 2)]
    np.testing.assert_allclose(images, np.stack(expected), atol=1e-3)


def test_cache_in_memory_and_on_disk(folder, tmp_path):
    ds = load_dataset(folder)
    plain, _ = collect(ds.to_tf_dataset("test", 3, False, 10))
    for cache in (True, tmp_path / "cache"):
        evaluated = ds.to_tf_dataset("test", 3, False, 10, cache=cache)
        np.testing.assert_allclose(collect(evaluated)[0], plain)
        np.testing.assert_allclose(collect(evaluated)[0], plain)  # from the cache
        train = ds.to_tf_dataset("train", 12, True, 10, cache=cache, seed=1)
        (a, la), (b, lb) = collect(train), collect(train)
        assert sorted(la.tolist()) == sorted(lb.tolist()) and not np.allclose(a, b)
    names = [p.name for p in (tmp_path / "cache").iterdir()]
    assert any(n.startswith("d_test_") for n in names) and any(n.startswith("d_train_") for n in names)


def test_empty_split_is_an_error(folder):
    with pytest.raises(ValueError, match="'val' split .* is empty"):
        load_dataset(folder).to_tf_dataset("val", 2, training=False)


def test_crop_window_follows_torchvision_rules():
    height, width = 300, 500
    window = tf.function(random_crop_window)
    tops, areas, ratios = set(), [], []
    for s in range(300):
        top, left, h, w = (int(v) for v in window(height, width, tf.constant([s, 7])))
        assert 0 <= top <= height - h and 0 <= left <= width - w and h > 0 and w > 0
        tops.add(top)
        areas.append(h * w / (height * width))
        ratios.append(w / h)
    assert min(areas) >= 0.079 and max(areas) <= 1.0 and max(areas) - min(areas) > 0.5
    assert min(ratios) >= 0.74 and max(ratios) <= 1.34
    assert len(tops) > 50
    # A stripe no window fits: the centred crop with the ratio clamped.
    assert [int(v) for v in random_crop_window(1, 100, tf.constant([0, 0]))] == [0, 49, 1, 1]
    assert [int(v) for v in random_crop_window(2, 100, tf.constant([0, 0]))] == [0, 48, 2, 3]
    assert [int(v) for v in random_crop_window(100, 3, tf.constant([0, 0]))] == [48, 0, 4, 3]


def test_horizontal_flip_happens_half_the_time():
    image = tf.reshape(tf.range(2 * 3 * 3, dtype=tf.float32), (2, 3, 3))
    flipped = 0
    for s in range(100):
        out = random_horizontal_flip(image, tf.constant([s, 1])).numpy()
        if not np.array_equal(out, image.numpy()):
            np.testing.assert_array_equal(out, image.numpy()[:, ::-1])
            flipped += 1
    assert 30 < flipped < 70


def test_crop_scale_and_flip_options(tmp_path):
    # Square images: a crop of the whole area is the whole image, so with
    # crop_scale=(1, 1) training images are the evaluation images, mirrored
    # or not as `flip` says.
    for i in range(10):
        split = "train" if i < 8 else "test"
        write_image(tmp_path / "sq" / split / f"c{i % 2}" / f"{i}.png", seed=i, size=(20, 20))
    ds = load_dataset(tmp_path / "sq")
    plain = {tuple(x[0, 0]): x for x in collect(ds.to_tf_dataset("train", 8, training=False, image_size=20))[0]}

    def training_images(**options):
        data = ds.to_tf_dataset("train", 8, training=True, image_size=20, seed=3, crop_scale=(1.0, 1.0), **options)
        return collect(data)[0]

    for image in training_images(flip=False):
        np.testing.assert_allclose(image, plain[tuple(image[0, 0])], atol=1e-3)
    mirrored = [not np.allclose(image, plain.get(tuple(image[0, 0]), -1), atol=1e-3)
                for image in training_images(flip=True)]
    assert 0 < sum(mirrored) < 8
    for bad in ((0.0, 1.0), (0.9, 0.5), (0.5, 1.5)):
        with pytest.raises(ValueError, match="crop_scale"):
            ds.to_tf_dataset("train", 8, training=True, crop_scale=bad)


def test_pipelines_declare_their_length(folder):
    import keras

    ds = load_dataset(folder)  # 12 training images
    train = ds.to_tf_dataset("train", 5, training=True, image_size=8, seed=0)
    assert len(train) == 3 and len(ds.to_tf_dataset("train", 5, training=True, image_size=8, drop_remainder=True)) == 2
    assert len(ds.to_tf_dataset("test", 4, training=False, image_size=8)) == 2
    assert sum(1 for _ in train) == 3
    # fit counts exactly one optimiser step per batch, so schedules that step per
    # epoch (paper_optimizer) stay aligned with the epochs.
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train, epochs=4, verbose=0)
    assert int(model.optimizer.iterations) == 4 * 3
