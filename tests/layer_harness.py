"""A shared check of the Keras layer contract, run on every layer of `cocoop_tf.layers`.

Each check takes a `LayerCase`: a way to make the layer in a given dtype
policy and the inputs to call it on. The checks are those keras-hub's layer
tests make: config round trip, symbolic and eager output shapes, mixed
precision, and `.keras` files that load in a fresh process.
"""

import dataclasses
import json
import subprocess
import sys
import textwrap
from typing import Callable
from typing import Optional

import keras
import numpy as np
from conftest import max_relative_difference

# Largest relative difference to the float32 output per mixed policy:
# float16 keeps 11 significant bits, bfloat16 8.
MIXED_TOLERANCE = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


@dataclasses.dataclass
class LayerCase:
    """A layer configuration and the inputs it is checked on.

    Attributes:
        name: the case's test id.
        make: `make(dtype)` returns a new, unbuilt layer with that dtype
            policy (`None`: the default, float32).
        inputs: positional arguments of an eager call (NumPy arrays).
        symbolic_inputs: returns the arguments of a symbolic call, a
            `keras.Input` for each array that is an input of the model (the
            others stay constants); `None` where the layer takes no tensor.
        symbolic_shape: the output shape the symbolic call must have.
    """

    name: str
    make: Callable[[Optional[str]], keras.layers.Layer]
    inputs: tuple = ()
    symbolic_inputs: Optional[Callable[[], tuple]] = None
    symbolic_shape: Optional[tuple] = None

    def built(self, dtype=None):
        """A new layer called once on `inputs`, and its output."""
        layer = self.make(dtype)
        return layer, _numpy(layer(*self.inputs))


def _numpy(outputs):
    return keras.tree.map_structure(lambda t: None if t is None else keras.ops.convert_to_numpy(t), outputs)


def _outputs(output):
    """A layer's output tensors as a list: one, or the present ones of a tuple (None: absent)."""
    return [o for o in (output if isinstance(output, tuple) else (output,)) if o is not None]


def _shapes(shape):
    """`compute_output_shape`'s answer as a list of shapes, as `_outputs` lists the tensors."""
    several = isinstance(shape, tuple) and any(isinstance(s, tuple) for s in shape)
    return [s for s in (shape if several else (shape,)) if s is not None]


def _json_form(config):
    """A config as the `.keras` file stores it (tuples become lists)."""
    return json.loads(json.dumps(config))


def check_config_round_trip(case):
    """`from_config(get_config())`, directly and via JSON, gives the same config and outputs."""
    layer, expected = case.built()
    config = layer.get_config()
    restored = type(layer).from_config(config)
    assert restored.get_config() == config
    serialized = _json_form(keras.layers.serialize(layer))
    from_json = keras.layers.deserialize(serialized)
    assert type(from_json) is type(layer)
    for other in (restored, from_json):
        other(*case.inputs)  # builds it
        other.set_weights(layer.get_weights())
        for got, want in zip(_outputs(_numpy(other(*case.inputs))), _outputs(expected), strict=True):
            np.testing.assert_array_equal(got, want)
    assert _json_form(keras.layers.serialize(from_json)) == serialized


def check_symbolic_call(case):
    """On `keras.Input`, the output has the stated (and as concrete as known) shape."""
    layer = case.make(None)
    args = case.symbolic_inputs()
    output = layer(*args)
    assert isinstance(output, keras.KerasTensor)
    assert tuple(output.shape) == case.symbolic_shape
    assert tuple(layer.compute_output_shape(*[tuple(a.shape) for a in args])) == case.symbolic_shape
    assert output.dtype == layer.compute_dtype


def check_eager_call(case):
    """Called on arrays, the output has the shape `compute_output_shape` gives for theirs."""
    layer, output = case.built()
    expected = layer.compute_output_shape(*[np.shape(a) for a in case.inputs])
    for tensor, shape in zip(_outputs(output), _shapes(expected), strict=True):
        assert tensor.shape == tuple(shape)
        assert keras.backend.standardize_dtype(tensor.dtype) == layer.compute_dtype


def check_mixed_precision(case, policy):
    """With a mixed policy: computes in half precision, keeps float32 variables, stays close."""
    reference, expected = case.built()
    layer = case.make(policy)
    layer(*case.inputs)
    layer.set_weights(reference.get_weights())
    output = layer(*case.inputs)
    assert layer.compute_dtype == keras.DTypePolicy(policy).compute_dtype
    assert all(keras.backend.standardize_dtype(o.dtype) == layer.compute_dtype for o in _outputs(output))
    floating = [v for v in layer.weights if "float" in keras.backend.standardize_dtype(v.dtype)]
    assert all(v.dtype == "float32" for v in floating), [
        (v.path, v.dtype) for v in floating
    ]
    for got, want in zip(_outputs(_numpy(output)), _outputs(expected), strict=True):
        assert max_relative_difference(got, want) <= MIXED_TOLERANCE[policy]


def functional_model(case):
    """A functional model around the case's layer, and the arrays it takes."""
    layer = case.make(None)
    args = case.symbolic_inputs()
    inputs = [a for a in args if isinstance(a, keras.KerasTensor)]
    feed = [x for x, a in zip(case.inputs, args) if isinstance(a, keras.KerasTensor)]
    return keras.Model(inputs, layer(*args)), feed


def save_model(folder, name, model, feed):
    """Saves `model` and its inputs under `folder`; returns its outputs on them."""
    model.save(folder / f"{name}.keras")
    np.savez(folder / f"{name}.npz", *feed)
    return _numpy(model(feed))


def load_in_fresh_process(folder, names):
    """Loads every `save_model`-saved model in one new Python; returns their outputs by name.

    One process for all: starting TensorFlow takes about 10 s.
    """
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import cocoop_tf  # registers the layers before the files are read
        import keras

        outputs = {{}}
        for name in {list(names)!r}:
            model = keras.saving.load_model({str(folder)!r} + f"/{{name}}.keras")
            with np.load({str(folder)!r} + f"/{{name}}.npz") as feed:
                result = model([feed[f"arr_{{i}}"] for i in range(len(feed.files))])
            outputs[name] = keras.tree.map_structure(lambda x: np.asarray(x).tolist(), result)
        print("OUTPUTS " + json.dumps(outputs))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-5000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("OUTPUTS "))
    return json.loads(line[len("OUTPUTS "):])
