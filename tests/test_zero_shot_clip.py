"""ZeroShotCLIP: prompts, ensembling, class swaps, saving and bad input."""

import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import max_relative_difference

import cocoop_tf
from cocoop_tf.clip.backbone import CLIP_MEAN
from cocoop_tf.clip.backbone import CLIP_STD


@pytest.fixture(scope="module")
def clip():
    return cocoop_tf.load_clip("random_tiny", seed=3)


@pytest.fixture
def images(rng):
    return rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference_logits(clip, images, prompts_per_class):
    """CLIP's zero-shot rule written out with the backbone's own encoders."""
    pixels = (images / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    image = _unit(np.asarray(clip.get_vision_embeddings(pixels.astype("float32"))))
    classes = []
    for prompts in prompts_per_class:
        text = _unit(np.asarray(clip.get_text_embeddings(cocoop_tf.tokenize(prompts))))
        classes.append(_unit(text.mean(axis=0)))
    scale = np.exp(float(clip.clip_head.logit_scale))
    return scale * image @ np.stack(classes).T


def test_logits_follow_clip_zero_shot_rule(clip, images):
    model = cocoop_tf.ZeroShotCLIP(clip, ["golden_retriever", "tabby cat", "747-400"])
    expected = _reference_logits(
        clip,
        images,
        [["a photo of a golden retriever."], ["a photo of a tabby cat."], ["a photo of a 747-400."]],
    )
    assert max_relative_difference(model(images), expected) <= 1e-5
    assert max_relative_difference(model.predict(images, verbose=0), expected) <= 1e-5


def test_template_ensemble_averages_normalised_features(clip, images):
    templates = ["a photo of a {}.", "{} texture.", "a centered satellite photo of {}."]
    model = cocoop_tf.ZeroShotCLIP(clip, ["river", "forest"], template=templates)
    expected = _reference_logits(
        clip, images, [[t.format(c) for t in templates] for c in ("river", "forest")]
    )
    assert max_relative_difference(model(images), expected) <= 1e-5


def test_set_classnames_swaps_classes_in_compiled_predict(clip, images):
    model = cocoop_tf.ZeroShotCLIP(clip, ["a", "b", "c"])
    assert model.predict(images, verbose=0).shape == (4, 3)
    model.set_classnames(["dog", "cat"])
    swapped = model.predict(images, verbose=0)
    fresh = cocoop_tf.ZeroShotCLIP(clip, ["dog", "cat"]).predict(images, verbose=0)
    np.testing.assert_allclose(swapped, fresh, rtol=1e-6)


def test_classify_with_token_ids_equals_a_model_for_those_classes(clip, images):
    model = cocoop_tf.ZeroShotCLIP(clip, ["a", "b"], template=["a photo of a {}.", "art of the {}"])
    token_ids = model.tokenize_classnames(["dog", "cat", "bird"])
    assert token_ids.shape == (3, 2, 77)
    fresh = cocoop_tf.ZeroShotCLIP(clip, ["dog", "cat", "bird"], template=["a photo of a {}.", "art of the {}"])
    np.testing.assert_allclose(model.classify(images, token_ids), fresh(images), rtol=1e-5, atol=1e-5)


def test_uint8_images_accepted(clip, images):
    model = cocoop_tf.ZeroShotCLIP(clip, ["a", "b"])
    as_uint8 = images.round().astype("uint8")
    np.testing.assert_allclose(
        model(as_uint8), model(as_uint8.astype("float32")), rtol=1e-6
    )


def test_save_and_load_in_a_clean_process(clip, images, tmp_path):
    model = cocoop_tf.ZeroShotCLIP(clip, ["tabby_cat", "dog"], template=["a photo of a {}.", "a {}"])
    expected = np.asarray(model(images))
    path = tmp_path / "zero_shot.keras"
    model.save(path)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(
        f"""
        import numpy as np, keras
        import cocoop_tf  # registers the serialisable classes
        model = keras.models.load_model({str(path)!r})
        assert model.classnames == ["tabby cat", "dog"], model.classnames
        np.save({str(tmp_path / "logits.npy")!r}, model.predict(np.load({str(tmp_path / "images.npy")!r}), verbose=0))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-5, atol=1e-5)


def test_backbone_is_frozen(clip):
    model = cocoop_tf.ZeroShotCLIP(clip, ["a"])
    assert model.trainable_weights == []


# --- bad input ---------------------------------------------------------------


def test_wrong_image_size_names_the_fix(clip):
    model = cocoop_tf.ZeroShotCLIP(clip, ["a", "b"])
    with pytest.raises(ValueError, match="32x32 pixels.*got shape \\(2, 64, 64, 3\\).*centre-crop"):
        model(np.zeros((2, 64, 64, 3), "float32"))


def test_wrong_channel_count(clip):
    model = cocoop_tf.ZeroShotCLIP(clip, ["a", "b"])
    with pytest.raises(ValueError, match="3 RGB channels.*got 4"):
        model(np.zeros((2, 32, 32, 4), "float32"))
    with pytest.raises(ValueError, match="batch axis"):
        model(np.zeros((32, 32, 3), "float32"))


def test_empty_class_list(clip):
    with pytest.raises(ValueError, match="class list is empty"):
        cocoop_tf.ZeroShotCLIP(clip, [])
    with pytest.raises(TypeError, match="wrap it in a list"):
        cocoop_tf.ZeroShotCLIP(clip, "cat")
    with pytest.raises(ValueError, match="Duplicate class names"):
        cocoop_tf.ZeroShotCLIP(clip, ["cat", "cat"])


def test_class_name_too_long_is_named(clip):
    long_name = "very " * 80 + "long_class"
    with pytest.raises(ValueError, match="class name 'very very.*does not fit.*context length is 77"):
        cocoop_tf.ZeroShotCLIP(clip, ["cat", long_name])


def test_bad_template(clip):
    with pytest.raises(ValueError, match="exactly one '\\{\\}'"):
        cocoop_tf.ZeroShotCLIP(clip, ["cat"], template="a photo")


SAME_TO_THE_TOKENIZER = [
    (["Cat", "cat"], "Cat", "cat"),
    (["big  cat", "big cat"], "big  cat", "big cat"),  # spaces: collapsed by the tokenizer
    (["T-shirt", "t - shirt"], "T-shirt", "t - shirt"),  # punctuation is a word of its own
    (["rock &amp; roll", "rock & roll"], "rock &amp; roll", "rock & roll"),  # HTML unescaped
    (["Abyssinian", "beagle", "american_bulldog", "American Bulldog"], "american bulldog", "American Bulldog"),
]


@pytest.mark.parametrize("names, first, second", SAME_TO_THE_TOKENIZER)
def test_class_names_the_tokenizer_cannot_tell_apart_are_refused(clip, names, first, second):
    message = f"class names '{first}' and '{second}' are the same text to CLIP's tokenizer"
    with pytest.raises(ValueError, match=message):
        cocoop_tf.ZeroShotCLIP(clip, names)
    with pytest.raises(ValueError, match=message):
        cocoop_tf.ZeroShotCLIP(clip, names, template=["a photo of a {}.", "art of the {}"])
    model = cocoop_tf.ZeroShotCLIP(clip, ["x", "y"])
    with pytest.raises(ValueError, match=message):
        model.set_classnames(names)
    assert model.classnames == ["x", "y"]  # the old class set stays


def test_real_class_names_that_differ_only_in_words_are_kept(clip):
    # Real names that look alike but tokenize apart (Caltech101, OxfordPets, UCF101).
    names = ["Faces", "Faces_easy", "Abyssinian", "american_bulldog", "Apply_Eye_Makeup",
             "Apply_Lipstick", "t-shirt", "tshirt", "747-400", "747-200"]
    assert cocoop_tf.ZeroShotCLIP(clip, names).classnames[1] == "Faces easy"


def test_zeroshot_command_refuses_names_the_tokenizer_cannot_tell_apart(capsys):
    from cocoop_tf.cli import main

    images = pathlib.Path(cocoop_tf.__file__).parent / "data" / "samples" / "chelsea.jpg"
    code = main(["zeroshot", "--backbone", "random_tiny", "--classnames", "tabby_cat", "Tabby cat",
                 "--images", str(images)])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1, error
    assert "zeroshot: error: The class names 'tabby cat' and 'Tabby cat' are the same text" in error


def test_no_images_give_no_rows(clip):
    model = cocoop_tf.ZeroShotCLIP(clip, ["a", "b", "c"])
    none = np.zeros((0, 32, 32, 3), "float32")
    assert np.asarray(model(none)).shape == (0, 3)
    assert model.predict(none, verbose=0).shape == (0, 3)
    assert np.asarray(model.classify(none, model.tokenize_classnames(["x", "y"]))).shape == (0, 2)
    reference = cocoop_tf.layers.CLIPImageEncoder(
        clip.vision_encoder, clip.vision_pooler, clip.vision_projection, mode="reference"
    )
    assert np.asarray(reference(none)).shape == (0, 32)


def test_non_finite_features_are_refused(clip, images):
    model = cocoop_tf.ZeroShotCLIP(clip, ["a", "b", "c"])
    image_features, text_features = model.encode_images(images), model.text_features()
    expected = model(images)
    np.testing.assert_allclose(model.feature_logits(image_features, text_features), expected, rtol=1e-5, atol=1e-5)
    bad = np.asarray(text_features).copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="The text_features hold NaN or infinite values; pass the outputs of class_features"):
        model.feature_logits(image_features, bad)
    bad = np.asarray(image_features).copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="The image_features hold NaN or infinite values; pass the outputs of encode_images"):
        model.feature_logits(bad, text_features)
