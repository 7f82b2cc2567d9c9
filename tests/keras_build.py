"""Test-only: the Keras 3 twin of a compiled kerspec model, and its weights both ways.

Each Keras layer is made from the config the shipped exporter writes for it
(`kerspec.interop.keras_export.layer_config`, as `kerspec export -o M.keras` puts it in
config.json), read by Keras's own `keras.layers.deserialize`. The exporter writes only the
arguments the spec sets and leaves the rest to Keras's defaults, so the twin also checks that
kerspec's defaults are Keras's: a builder passing every resolved value would hide a default that
differs, and an argument the exporter mistranslated or dropped makes the twin compute something
else, which the comparison of weights after training shows. The graph is wired here, walking
`model.graph` in execution order (a shared layer is the same Keras layer object called again),
so that a Lambda, which the exporter refuses (Keras keeps it as Python bytecode), can still be
given its Keras function from LAMBDAS. Initializers do not matter: the kerspec weights are copied
into the twin.

    theirs = keras_twin(ours)          # a keras.Model, outputs keyed like ours
    copy_weights(ours, theirs)
    theirs.compile(optimizer=keras_optimizer(ours), loss=keras_losses(ours), ...)
"""

from __future__ import annotations

import numpy as np
import pytest

import kerspec
from kerspec.interop.keras_export import KerasExportError, layer_config

keras = pytest.importorskip("keras")

# The Lambda expressions the tested specs use, as Keras ops (kerspec never evaluates text as
# Python, and neither does this builder: an expression not listed here skips the test).
LAMBDAS = {
    "abs(x0 - x1)": lambda xs: keras.ops.abs(xs[0] - xs[1]),
    "tanh(x) * 2": lambda x: keras.ops.tanh(x) * 2,
}


class Unsupported(Exception):
    """The model uses something this builder cannot express in Keras."""


def _find_class(module, type_name: str):
    """Keras's class for a kerspec type name: `sgd` -> SGD, `exponential_decay` -> ExponentialDecay."""
    wanted = type_name.replace("_", "").lower()
    for attr in dir(module):
        obj = getattr(module, attr)
        if isinstance(obj, type) and attr.lower() == wanted:
            return obj
    raise Unsupported(f"no Keras class for {type_name!r} in {module.__name__}")


def _config(item) -> dict:
    return {k: v for k, v in item.model_dump(by_alias=True).items() if v is not None}


def keras_layer(layer, name: str, dtype: str = "float32"):
    if layer.type == "Lambda":
        if layer.expression not in LAMBDAS:
            raise Unsupported(f"Lambda expression {layer.expression!r}")
        return keras.layers.Lambda(LAMBDAS[layer.expression], name=name)
    try:
        config = layer_config(layer, name, dtype)
    except KerasExportError as err:
        raise Unsupported(f"the exporter refuses {layer.type}: {err.message}") from None
    return keras.layers.deserialize(config)


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
            layers[node.owner] = keras_layer(node.layer, node.owner, graph.dtype)
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
