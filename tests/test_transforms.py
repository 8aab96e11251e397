"""Image decoding and CLIP's evaluation transform."""

import numpy as np
import pytest
import tensorflow as tf

from cocoop_tf.data.transforms import load_image
from cocoop_tf.data.transforms import resize_and_center_crop


def test_short_side_already_at_size_is_a_pure_centre_crop(rng):
    image = rng.integers(0, 256, (32, 70, 3)).astype("float32")
    out = resize_and_center_crop(image, 32).numpy()
    left = round((70 - 32) / 2)  # 19, as torchvision's CenterCrop
    np.testing.assert_allclose(out, image[:, left : left + 32], atol=1e-3)


@pytest.mark.parametrize("shape", [(100, 60, 3), (60, 100, 3), (17, 17, 3), (500, 333, 3)])
def test_output_shape_and_range(rng, shape):
    image = rng.integers(0, 256, shape).astype("uint8")
    out = resize_and_center_crop(image, 32)
    assert out.shape == (32, 32, 3) and out.dtype == tf.float32
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0


def test_resize_keeps_the_aspect_ratio_of_the_content():
    # A left half black, right half white image stays half and half after resizing.
    image = np.zeros((64, 128, 3), "float32")
    image[:, 64:] = 255
    out = resize_and_center_crop(image, 32).numpy()  # resized to 32x64, crop 16..48
    assert out[:, :14].max() < 1 and out[:, 18:].min() > 254


def test_load_image_grey_rgba_and_corrupt(tmp_path):
    grey = tmp_path / "grey.png"
    tf.io.write_file(str(grey), tf.io.encode_png(np.full((5, 7, 1), 9, "uint8")))
    rgba = tmp_path / "rgba.png"
    tf.io.write_file(str(rgba), tf.io.encode_png(np.full((5, 7, 4), 200, "uint8")))
    assert load_image(grey).shape == (5, 7, 3) and int(load_image(grey)[0, 0, 2]) == 9
    assert load_image(rgba).shape == (5, 7, 3)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ValueError, match="Cannot decode .*broken.jpg.* as an image: truncated JPEG"):
        load_image(broken)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
