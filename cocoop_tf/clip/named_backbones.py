"""CLIP backbones that `load_clip` knows by name, registered by other packages.

The core does not depend on who provides a named backbone: a package
registers the name with a loader, the way keras-hub model families register
their presets. `cocoop_tf.demo` registers `"mini_clip"`.
"""

# Name -> (load, description).
_BACKBONES = {}


def register_backbone(name, load, description):
    """Makes `load_clip(name)` return the backbone that `load` builds.

    Args:
        name: the source name, e.g. `"mini_clip"`.
        load: a function `(dtype) -> keras_hub.models.CLIPBackbone`;
            `load_clip` freezes what it returns.
        description: a few words for error messages.
    """
    # Two packages claiming one name would silently shadow each other.
    if name in _BACKBONES and _BACKBONES[name][0] is not load:
        raise ValueError(f"A CLIP backbone named {name!r} is already registered.")
    _BACKBONES[name] = (load, description)


def registered_backbones():
    """The registered backbones: a dict from name to `(load, description)`."""
    return dict(_BACKBONES)
