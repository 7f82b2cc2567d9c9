"""`kerspec export SPEC --weights W -o MODEL.keras`: a Keras 3 archive of the model.

The archive is what `model.save()` writes: `config.json` (a Functional model, one config per
layer with its calls as inbound nodes), `metadata.json`, and `model.weights.h5` with each
layer's variables under the group name Keras derives from its class (`layers/dense_1/vars/0`).
Only the arguments the spec sets are written; Keras fills in its defaults, which are kerspec's.
A Lambda is refused: Keras keeps its function as Python bytecode, which kerspec never writes.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kerspec.errors import KerspecError, Problems
from kerspec.graph.compile import snake_case
from kerspec.interop.archive import need_h5py
from kerspec.interop.keras_config import serialize
from kerspec.io import atomic_write
from kerspec.registry import Item

if TYPE_CHECKING:
    from kerspec.api import Model

KERAS_VERSION = "3.5.0"  # the oldest Keras 3 whose archive layout this follows
STRUCTURAL = {"name", "from_", "input_shape", "type", "weights_"}
MODULES = {"initializer": "keras.initializers", "regularizer": "keras.regularizers",
           "constraint": "keras.constraints"}
# Where a wrapper keeps the layer whose variables it holds (Keras's attribute names).
RECURRENT = {"SimpleRNN", "LSTM", "GRU"}


class KerasExportError(KerspecError):
    """The model cannot be written as a Keras archive."""


def write_keras(model: Model, path: Path, *, overwrite: bool = False) -> None:
    config, weights = keras_archive(model)
    h5 = _weights_h5(config, weights)
    metadata = {"keras_version": KERAS_VERSION, "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S")}

    def write(file) -> None:
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("metadata.json", json.dumps(metadata))
            archive.writestr("config.json", json.dumps(config))
            archive.writestr("model.weights.h5", h5)

    atomic_write(path, write, replace=overwrite)


def keras_archive(model: Model) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """The model's config.json as a dict, and its weights by Keras layer name."""
    graph = model.graph
    layers: dict[str, dict] = {}
    calls: dict[str, int] = {}  # node name -> its call index on its owner layer
    problems = []
    for node in graph.nodes:
        if any(ref.node not in calls for ref in node.inputs):
            continue  # after a layer already refused
        if node.owner in layers:  # a shared layer: one more call
            entry = layers[node.owner]
        elif node.type == "Input":
            shape = [None, *node.output_shapes[0]]
            entry = layers[node.name] = {
                "module": "keras.layers", "class_name": "InputLayer",
                "config": {"batch_shape": shape, "dtype": node.layer.dtype or graph.dtype, "name": node.name},
                "registered_name": None, "name": node.name, "inbound_nodes": []}
            calls[node.name] = 0
            continue
        else:
            try:
                entry = layers[node.owner] = {**layer_config(node.layer, node.owner, graph.dtype),
                                              "name": node.owner, "inbound_nodes": []}
            except KerasExportError as err:
                problems.append(KerasExportError(f"{node.type} {node.name!r}: {err.message}"))
                continue
        args = [_tensor(graph, ref, calls) for ref in node.inputs]
        calls[node.name] = len(entry["inbound_nodes"])
        entry["inbound_nodes"].append({"args": [args[0] if len(args) == 1 else args], "kwargs": {}})
    if problems:
        raise Problems(problems)
    order = keras_layer_order(graph)
    body = {
        "name": model.name, "trainable": True, "layers": [layers[name] for name in order],
        "input_layers": [[name, 0, 0] for name in graph.inputs],
        "output_layers": [_history(graph, ref, calls) for ref in graph.outputs],
    }
    config = {"module": "keras.src.models.functional", "class_name": "Functional", "config": body,
              "registered_name": "Functional"}
    if model.spec.compile is not None and model.spec.compile.loss is not None:
        config["compile_config"] = _compile_config(model)
    return config, model.params


def keras_layer_order(graph) -> list[str]:
    """The layers in the order Keras's Functional model lists them (keras.src.ops.function's
    map_graph): deepest from the outputs first, ties in the order a walk from the outputs meets
    them. Keras names each layer's group in the weights file by its place in this order."""
    index: dict[str, int] = {}
    finished: list[str] = []

    def walk(name: str) -> None:
        if name in finished:
            return
        node = graph.node(name)
        index.setdefault(node.owner, len(index))
        for ref in node.inputs:
            walk(ref.node)
        finished.append(name)

    for ref in graph.outputs:
        walk(ref.node)
    node_depth: dict[str, int] = {}
    layer_depth: dict[str, int] = {}
    for name in reversed(finished):
        node = graph.node(name)
        depth = max(node_depth.setdefault(name, 0), layer_depth.get(node.owner, 0))
        layer_depth[node.owner] = node_depth[name] = depth
        for ref in node.inputs:
            node_depth[ref.node] = max(depth + 1, node_depth.get(ref.node, 0))
    for name in graph.inputs:
        if name not in layer_depth:
            layer_depth[name], index[name] = 0, -1
    return sorted(layer_depth, key=lambda owner: (-layer_depth[owner], index[owner]))


def _history(graph, ref, calls: dict[str, int]) -> list:
    node = graph.node(ref.node)
    return [node.owner, calls[node.name], ref.index]


def _tensor(graph, ref, calls: dict[str, int]) -> dict:
    shape = [None, *graph.output_shape(ref)]
    return {"class_name": "__keras_tensor__",
            "config": {"shape": shape, "dtype": graph.dtype, "keras_history": _history(graph, ref, calls)}}


def layer_config(layer, name: str | None, dtype: str) -> dict:
    if layer.type == "Lambda":
        raise KerasExportError("Keras keeps a Lambda's function as Python bytecode, which kerspec"
                               " never writes; replace it with Keras layers to export")
    config: dict[str, Any] = {"name": name} if name else {}
    config.update({"trainable": layer.trainable, "dtype": dtype})
    for key in sorted(layer.model_fields_set - STRUCTURAL, key=list(type(layer).model_fields).index):
        value = getattr(layer, key)
        alias = type(layer).model_fields[key].alias or key
        config[alias] = _argument(key, value, dtype)
    return {"module": "keras.layers", "class_name": layer.type, "config": config, "registered_name": None}


def _argument(key: str, value: Any, dtype: str) -> Any:
    if key in ("layer", "backward_layer") and value is not None:
        return layer_config(value, None, dtype)
    if isinstance(value, Item):
        if key.endswith("activation"):
            if value.model_dump(exclude={"type"}) != type(value)().model_dump(exclude={"type"}):
                raise KerasExportError(f"{key}: Keras takes an activation argument by name only,"
                                       f" without arguments; use an Activation layer or defaults")
            return value.type
        module = next((m for suffix, m in MODULES.items() if key.endswith(suffix)), None)
        if module is None:
            raise KerasExportError(f"{key}: kerspec cannot write this argument for Keras")
        return serialize(value, module)
    if isinstance(value, tuple):
        return list(value)
    return value


def _compile_config(model: Model) -> dict:
    compile_ = model.spec.compile
    names = model.output_names
    optimizer = compile_.optimizer
    if getattr(optimizer, "scheduled", False):
        raise KerasExportError("a learning-rate schedule in compile.optimizer is not exported to Keras")
    loss = compile_.loss
    losses = [loss[n] for n in names] if isinstance(loss, dict) else [loss] * len(names)
    metrics = compile_.metrics
    per_output = [metrics.get(n, []) if isinstance(metrics, dict) else metrics for n in names]
    weights = compile_.loss_weights
    if isinstance(weights, dict):
        weights = [weights.get(n, 1.0) for n in names]
    one = len(names) == 1
    loss_out = [_named(item, "keras.losses") for item in losses]
    metric_out = [[_named(m, "keras.metrics") for m in ms] for ms in per_output]
    return {
        "optimizer": serialize(optimizer, "keras.optimizers"),
        "loss": loss_out[0] if one else loss_out,
        "loss_weights": weights,
        "metrics": (metric_out[0] or None) if one else metric_out,
        "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False,
    }


def _named(item, module: str):
    """A loss or metric by name when its arguments are Keras's defaults, else serialized."""
    args = item.model_dump(exclude={"type"})
    defaults = type(item)().model_dump(exclude={"type"}) if _constructible(item) else None
    return item.type if args == defaults else serialize(item, module)


def _constructible(item) -> bool:
    return all(not f.is_required() for k, f in type(item).model_fields.items() if k != "type")


# -- model.weights.h5 ----------------------------------------------------------------------------


def _weights_h5(config: dict, params: dict[str, dict[str, np.ndarray]]) -> bytes:
    h5py = need_h5py()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        file.create_group("vars").attrs["name"] = config["config"]["name"]
        layers = file.create_group("layers")
        used: dict[str, int] = {}
        for layer in config["config"]["layers"]:
            base = snake_case(layer["class_name"])
            count = used.get(base, 0)
            used[base] = count + 1
            group = layers.create_group(base if count == 0 else f"{base}_{count}")
            _layer_vars(group, layer, params.get(layer["name"], {}), "")
    return buffer.getvalue()


def _layer_vars(group, layer: dict, weights: dict[str, np.ndarray], prefix: str) -> None:
    """A layer's variables where Keras looks for them: its own `vars`, an RNN's `cell/vars`,
    a wrapper's `layer/...` or `forward_layer/...` and `backward_layer/...`."""
    kind = layer["class_name"]
    vars_ = group.create_group("vars")
    vars_.attrs["name"] = layer["config"].get("name", snake_case(kind))
    if kind == "TimeDistributed":
        _layer_vars(group.create_group("layer"), layer["config"]["layer"], weights, prefix)
    elif kind == "Bidirectional":
        forward = layer["config"]["layer"]
        backward = layer["config"].get("backward_layer") or forward
        _layer_vars(group.create_group("forward_layer"), forward, weights, "forward/")
        _layer_vars(group.create_group("backward_layer"), backward, weights, "backward/")
    elif kind in RECURRENT:
        cell = group.create_group("cell")
        _store(cell.create_group("vars"), weights, prefix)
    else:
        _store(vars_, weights, prefix)


def _store(vars_, weights: dict[str, np.ndarray], prefix: str) -> None:
    mine = [w for name, w in weights.items() if (name.rpartition("/")[0] + "/" if "/" in name else "") == prefix]
    for i, array in enumerate(mine):
        vars_.create_dataset(str(i), data=array)
