"""What still happens when TensorFlow arrives after `import cocoop_tf`, whoever imports it.

`import cocoop_tf` does not import TensorFlow (so `cocoop-tf --help` and
argument errors answer at once); the library's modules load on first use.
Two things used to come with importing TensorFlow up front and must happen
whether TensorFlow is then imported by the user (`import keras`,
`import tensorflow`) or by one of our modules:

- TensorFlow's start-up notices are held back
  (`native_stderr.tensorflow_starting`);
- Keras learns our serializable classes (models, layers, the optimiser and
  its schedule), so that `keras.saving.load_model("model.keras")` finds
  them. Keras imports the module of a saved class only for its own
  packages, so `cocoop_tf.models`, which imports and registers them all, is
  imported as soon as Keras is loaded.

A finder at the head of `sys.meta_path` gives the imports of `tensorflow`,
`keras`, `keras_hub` and our own modules a loader that does this. Our
classes are registered when the outermost of those imports ends, so never
while one of our modules, which our models may need, is half imported.
"""

import importlib
import sys
import threading

from cocoop_tf.native_stderr import tensorflow_starting

# Our classes are registered after these (which import each other) are complete.
_KERAS_PACKAGES = ("tensorflow", "keras", "keras_hub")

_in_progress = threading.local()  # .depth: watched imports this thread is inside
_registered = False


def register_with_keras():
    """Imports our Keras classes (`cocoop_tf.models`) if Keras is loaded and they are not yet."""
    global _registered
    if _registered or "keras" not in sys.modules:
        return
    _registered = True
    try:
        importlib.import_module("cocoop_tf.models")
    except BaseException:
        _registered = False
        raise


class _WatchingLoader:
    """The loader a module's finder gave it, with the start-up work around its execution."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # get_code, get_data, is_package, ... as the loader has them
        if name == "loader":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def create_module(self, spec):
        create = getattr(self.loader, "create_module", None)
        return create(spec) if create else None

    def exec_module(self, module):
        # The module keeps its own loader (importlib.resources, inspect and pickle ask it).
        module.__spec__.loader = module.__loader__ = self.loader
        _in_progress.depth = getattr(_in_progress, "depth", 0) + 1
        try:
            if module.__name__ == "tensorflow":
                with tensorflow_starting():
                    self.loader.exec_module(module)
            else:
                self.loader.exec_module(module)
        finally:
            _in_progress.depth -= 1
        if _in_progress.depth == 0:
            register_with_keras()


class _Finder:
    """Finds watched modules with the other finders and gives them a `_WatchingLoader`."""

    cocoop_tf_import_hook = True  # marks every copy of this class, should the module be reloaded

    def find_spec(self, name, path=None, target=None):
        if name not in _KERAS_PACKAGES and not name.startswith("cocoop_tf."):
            return None
        for finder in sys.meta_path:
            if getattr(finder, "cocoop_tf_import_hook", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _WatchingLoader(spec.loader)
                return spec
        return None


def install():
    """Puts the finder at the head of `sys.meta_path` (once)."""
    if not any(getattr(finder, "cocoop_tf_import_hook", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
