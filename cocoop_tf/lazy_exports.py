"""Package names that load their modules on first use (PEP 562), so that importing a package is free."""

import importlib


def lazy_exports(namespace, exports, subpackages=()):
    """The `__getattr__`, `__dir__` and `__all__` of a package whose names load when first used.

    Args:
        namespace: the package's `globals()`; a loaded name is kept there, so
            it loads once.
        exports: dict of public name -> the module that defines it.
        subpackages: names of subpackages, imported when first used.

    Returns:
        `(__getattr__, __dir__, __all__)`, to assign at the package's top level.
    """
    package = namespace["__name__"]
    public = [*exports, *subpackages]

    def __getattr__(name):
        if name in subpackages:
            return importlib.import_module(f"{package}.{name}")
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted({*namespace, *public})

    return __getattr__, __dir__, public
