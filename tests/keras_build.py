"""Test-only: the Keras 3 twin of a compiled kerspec model, and its weights both ways.

kerspec keeps Keras's layer class names, argument names and weight names and layouts, so the twin
is built by walking `model.graph` in execution order and creating each Keras layer from the kerspec
layer's own arguments: nested activations, regularizers and constraints become Keras objects,
wrappers get their inner layer built the same way, and a shared layer is the same Keras layer
object called again. Initializers are left out: the kerspec weights are copied into the twin.

    theirs = keras_twin(ours)          # a keras.Model, outputs keyed like ours
    copy_weights(ours, theirs)
    theirs.compile(optimizer=keras_optimizer(ours), loss=keras_losses(ours), ...)
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import kerspec

keras = pytest.importorskip("keras")

# kerspec's own keys, or ones the twin does not need (the weights are copied in).
SKIPPED_KEYS = {"type", "name", "from", "input_shape", "share"}

# The Lambda expressions the tested specs use, as Keras ops (kerspec never evaluates text as
# Python, and neither does this builder: an expression not listed here skips the test).
LAMBDAS = {
    "abs(x0 - x1)": lambda xs: keras.ops.abs(xs[0] - xs[1]),
    "tanh(x) * 2": lambda x: keras.ops.tanh(x) * 2,
}


class Unsupported(Exception):
    """The model uses something this builder cannot express in Keras."""


def _find_class(module, type_name: str):
    """Keras's class for a kerspec type name: `max_norm` -> MaxNorm, `sgd` -> SGD, `l1_l2` -> L1L2."""
    wanted = type_name.replace("_", "").lower()
    for attr in dir(module):
        obj = getattr(module, attr)
        if isinstance(obj, type) and attr.lower() == wanted:
            return obj
    raise Unsupported(f"no Keras class for {type_name!r} in {module.__name__}")


def _config(item) -> dict:
    return {k: v for k, v in item.model_dump(by_alias=True).items() if v is not None}


def _activation(config: dict):
    config = dict(config)
    name = config.pop("type")
    function = keras.activations.get(name)
    return functools.partial(function, **config) if config else function


def _converted(key: str, value):
    if isinstance(value, dict) and "type" in value:
        if key in ("activation", "recurrent_activation"):
            return _activation(value)
        if key.endswith("_regularizer"):
            args = {k: v for k, v in value.items() if k != "type"}
            return _find_class(keras.regularizers, value["type"])(**args)
        if key.endswith("_constraint"):
            args = {k: v for k, v in value.items() if k != "type"}
            return _find_class(keras.constraints, value["type"])(**args)
        if key in ("layer", "backward_layer"):
            return _layer_from_config(value, None)
        raise Unsupported(f"argument {key!r} = {value!r}")
    if isinstance(value, list) and key in ("pool_size", "strides", "kernel_size", "dilation_rate",
                                           "size", "padding", "cropping", "target_shape", "dims"):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _layer_from_config(config: dict, name: str | None):
    config = {k: v for k, v in config.items() if v is not None}
    type_name = config["type"]
    if type_name == "Lambda":
        expression = config["expression"]
        if expression not in LAMBDAS:
            raise Unsupported(f"Lambda expression {expression!r}")
        return keras.layers.Lambda(LAMBDAS[expression], name=name)
    args = {}
    for key, value in config.items():
        if key not in SKIPPED_KEYS and not key.endswith("_initializer"):
            args[key] = _converted(key, value)
    cls = getattr(keras.layers, type_name, None)
    if cls is None:
        raise Unsupported(f"no Keras layer {type_name!r}")
    return cls(name=name, **args)


def keras_layer(layer, name: str):
    return _layer_from_config(_config(layer), name)


def keras_twin(model: kerspec.Model):
    """A Keras functional model computing what `model` computes, its layers named by owner."""
    graph = model.graph
    tensors: dict[str, list] = {}
    layers: dict[str, object] = {}
    for node in graph.nodes:
        if node.type == "Input":
            shape = graph.input_shapes()[node.name]
            tensors[node.name] = [keras.Input(shape=tuple(shape), name=node.name)]
            continue
        if node.owner not in layers:
            layers[node.owner] = keras_layer(node.layer, node.owner)
        inputs = [tensors[ref.node][ref.index] for ref in node.inputs]
        out = layers[node.owner](inputs[0] if len(inputs) == 1 else inputs)
        tensors[node.name] = list(out) if isinstance(out, list | tuple) else [out]
    inputs = [tensors[name][0] for name in graph.inputs]
    outputs = {name: tensors[ref.node][ref.index] for name, ref in zip(model.output_names, graph.outputs)}
    if len(outputs) == 1:
        (outputs,) = outputs.values()
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs)


def weight_key(layer_name: str, variable) -> str:
    """kerspec's name for a Keras variable: `bi/forward_lstm/lstm_cell/kernel` -> `bi/forward/kernel`."""
    parts = variable.path.split("/")
    direction = next((p.split("_")[0] for p in parts[1:-1] if p.startswith(("forward_", "backward_"))), None)
    return f"{layer_name}/{direction}/{parts[-1]}" if direction else f"{layer_name}/{parts[-1]}"


def copy_weights(ours: kerspec.Model, theirs) -> None:
    flat = our_weights(ours)
    expected = set(flat)
    seen = set()
    for layer in theirs.layers:
        for variable in layer.weights:
            key = weight_key(layer.name, variable)
            variable.assign(flat[key])
            seen.add(key)
    assert seen == expected, f"Keras weights {sorted(seen)}, kerspec weights {sorted(expected)}"


def keras_weights(theirs) -> dict[str, np.ndarray]:
    return {weight_key(layer.name, v): np.array(v.numpy()) for layer in theirs.layers for v in layer.weights}


def our_weights(ours: kerspec.Model) -> dict[str, np.ndarray]:
    return {f"{owner}/{name}": w.copy() for owner, ws in ours.params.items() for name, w in ws.items()}


def _from_item(module, item):
    config = _config(item)
    return _find_class(module, config.pop("type"))(**config)


def keras_optimizer(model: kerspec.Model):
    config = _config(model.spec.compile.optimizer)
    rate = model.spec.compile.optimizer.learning_rate
    if not isinstance(rate, int | float):
        config["learning_rate"] = _from_item(keras.optimizers.schedules, rate)
    return _find_class(keras.optimizers, config.pop("type"))(**config)


def keras_losses(model: kerspec.Model):
    """The compile arguments `loss` and `loss_weights` for the twin, from the trainer's heads."""
    heads = model.trainer.heads
    losses = {h.name: _from_item(keras.losses, h.loss) for h in heads}
    if len(heads) == 1:
        return losses[heads[0].name], None
    return losses, {h.name: h.weight for h in heads}
