"""Datasets that `load_dataset` knows by name, registered by other packages.

The core does not depend on who provides a named dataset: a package
registers the name with a function that makes its `Source`, the way
keras-hub model families register their presets. `cocoop_tf.demo`
registers `"mini_digits_animals"`.
"""

# Name -> (make_source, description).
_DATASETS = {}


def register_dataset(name, make_source, description):
    """Makes `load_dataset(name, data_root)` load the `Source` that `make_source` makes.

    Args:
        name: the dataset name, e.g. `"mini_digits_animals"`.
        make_source: a function `(data_root) -> cocoop_tf.data.sources.Source`;
            it gets `load_dataset`'s `data_root`, which may be None.
        description: a few words for error messages.
    """
    # Two packages claiming one name would silently shadow each other.
    if name in _DATASETS and _DATASETS[name][0] is not make_source:
        raise ValueError(f"A dataset named {name!r} is already registered.")
    _DATASETS[name] = (make_source, description)


def registered_datasets():
    """The registered datasets: a dict from name to `(make_source, description)`."""
    return dict(_DATASETS)
