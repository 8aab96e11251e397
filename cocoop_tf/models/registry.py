"""The registry of methods: every command, config, checkpoint and export reads it.

A method is a `CLIPClassifier` subclass registered with `@register_method`;
its class attributes say what the rest of the library needs to know (its
command-line name `method`, `display_name`, whether it `learns`, the
`RunConfig` settings it takes). Adding a method is one model file and its
registration, and its line in `cocoop_tf/catalog.py`, from which the
command line lists the methods without importing TensorFlow (a test checks
the two agree); see the contributors' section of the README.
"""

import keras

METHODS = {}


def register_method(cls):
    """Class decorator: makes a classifier a method of every command.

    Args:
        cls: a `CLIPClassifier` subclass with `method` and `display_name`
            set. It is also registered as a Keras serializable.

    Returns:
        `cls`.
    """
    if not cls.method or not cls.display_name:
        raise ValueError(f"{cls.__name__} needs the class attributes `method` and `display_name`.")
    registered = METHODS.get(cls.method)
    if registered is not None and registered.__qualname__ != cls.__qualname__:
        raise ValueError(f"The method name {cls.method!r} is taken by {registered.__name__}.")
    METHODS[cls.method] = keras.saving.register_keras_serializable(package="cocoop_tf")(cls)
    return cls


def get_method(name):
    """The registered classifier class of a method name ("coop") or class name ("CoOp").

    Raises:
        ValueError: naming the registered methods.
    """
    if name in METHODS:
        return METHODS[name]
    for cls in METHODS.values():
        if name == cls.__name__:
            return cls
    raise ValueError(f"Unknown method {name!r}; the methods are {', '.join(METHODS)}.")


def method_names(learns=None, by_default=False):
    """Registered method names in registration order.

    Args:
        learns: True for the methods that train, False for those that do
            not (zero-shot CLIP), None for all.
        by_default: only the methods that run when none are named
            (`runs_by_default`: the CoCoOp paper's).
    """
    return [
        name for name, cls in METHODS.items()
        if (learns is None or cls.learns == learns) and (cls.runs_by_default or not by_default)
    ]
