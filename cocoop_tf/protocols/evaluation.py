"""Test-split accuracy, with the predictions kept so anyone can recount it."""

import os

import numpy as np

from cocoop_tf.protocols.training import progress_verbosity


def accuracy(labels, predicted):
    """Top-1 accuracy in percent, as the paper reports it."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.size == 0:
        raise ValueError("No test images to evaluate.")
    return float(100.0 * np.mean(labels == predicted))


def predict_split(model, dataset, split, batch_size, image_size):
    """Labels and top-1 predictions of `model` on a split, in `dataset.items(split)` order.

    The model's class set must be `dataset.classnames` (see `set_classnames`).

    Args:
        model: a classifier of any registered method.
        dataset: an `ImageDataset` view.
        split: "test" (or "val", "train").
        batch_size: images per batch.
        image_size: input side.

    Returns:
        `(labels, predicted)`, int32 arrays.
    """
    if list(model.classnames) != list(dataset.classnames):
        raise ValueError("The model's classes are not the dataset's; call set_classnames first.")
    labels = np.array([item.label for item in dataset.items(split)], np.int32)
    images = dataset.to_tf_dataset(split, batch_size, training=False, image_size=image_size)
    steps = -(-len(labels) // batch_size)
    logits = model.predict(images.map(lambda x, y: x), steps=steps, verbose=progress_verbosity())
    return labels, np.argmax(logits, axis=-1).astype(np.int32)


def save_predictions(path, labels, predicted, classnames):
    """Writes labels, predictions and class names to an `.npz` file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, labels=labels, predicted=predicted, classnames=np.array(classnames))


def load_predictions(path):
    """Reads a predictions file: `(labels, predicted, classnames)`."""
    with np.load(path) as data:
        return data["labels"], data["predicted"], [str(c) for c in data["classnames"]]
