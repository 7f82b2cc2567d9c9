"""`kerspec import`: a Keras model file -> a kerspec spec and its weights.

Reads Keras 3 `.keras` archives, `model.to_json()` files and legacy `.h5` models. The config is
data (JSON); nothing in it is run: a Lambda layer (Python bytecode) or a custom class is refused
by name. Every layer, argument and call the spec cannot say is collected, so one run lists them
all, each at its place in the Keras config. The spec written is checked by kerspec's own loader
and compiler before anything is written, and the weights by the same check `--weights` gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kerspec.activations import ACTIVATIONS
from kerspec.constraints import CONSTRAINTS
from kerspec.errors import KerspecError, Problems
from kerspec.initializers import INITIALIZERS
from kerspec.interop.archive import (
    MAX_CONFIG_BYTES,
    MAX_WEIGHTS_BYTES,
    H5Reader,
    ModelFileError,
    parse_json,
    read_zip,
)
from kerspec.interop.keras_config import ItemReader, harmless, is_custom, without_defaults
from kerspec.layers import LAYERS
from kerspec.regularizers import REGULARIZERS
from kerspec.training.losses import LOSSES
from kerspec.training.metrics import METRICS
from kerspec.training.optimizers import OPTIMIZERS

MODELS = ("Sequential", "Functional", "Model")
KERAS_ARCHIVE = {"config.json": MAX_CONFIG_BYTES, "metadata.json": MAX_CONFIG_BYTES,
                 "model.weights.h5": MAX_WEIGHTS_BYTES}
# Keras layer-config keys that are not arguments, or not ones a spec carries.
NOT_ARGUMENTS = {"name", "trainable", "dtype"}
# A layer's call arguments Keras records that change nothing at inference when left as they are.
CALL_DEFAULTS = {"training": (None, False), "mask": (None,)}
# The operations Keras 3 records to make masks (legacy .h5 configs do not say their module).
MASK_OPS = {"NotEqual", "Equal", "Any", "All", "LogicalAnd", "LogicalOr", "Cast", "ExpandDims", "Squeeze"}
# How a sub-object of a Keras layer names the weights kerspec keys under it.
WEIGHT_SCOPES = {"cell": "", "layer": "", "forward_layer": "forward/", "backward_layer": "backward/"}


class ImportProblems(Problems):
    """What in a Keras model kerspec cannot express, every item at its place in the config."""


@dataclass
class KerasModel:
    """A Keras model file, read: its config, compile config and weight arrays by layer name."""

    config: dict
    compile: dict | None
    weights: dict[str, list[tuple[str, Any]]] | None  # layer -> [(kerspec prefix, dataset)]
    reader: H5Reader | None
    where: str


@dataclass
class Imported:
    spec: dict
    weights: dict[str, dict[str, np.ndarray]] | None
    notes: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        return spec_yaml(self.spec)


# -- reading the file ----------------------------------------------------------------------------


def read_keras_model(path: Path) -> KerasModel:
    where = str(path)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        members = read_zip(path, KERAS_ARCHIVE, required={"config.json"})
        config = parse_json(members["config.json"], "config.json", where)
        reader = None
        weights = None
        if "model.weights.h5" in members:
            reader = H5Reader(members["model.weights.h5"], f"{where}: model.weights.h5")
            weights = _keras3_weights(reader)
        return KerasModel(_model_config(config, where), _compile(config), weights, reader, where)
    if suffix in (".h5", ".hdf5"):
        reader = H5Reader(path, where)
        text = reader.text_attribute(reader.file, "model_config")
        if text is None:
            reader.close()
            raise ModelFileError("holds no model_config: a weights-only file is not a model", where)
        config = parse_json(text, "model_config", where)
        training = reader.text_attribute(reader.file, "training_config")
        compile_ = parse_json(training, "training_config", where) if training else None
        weights = _legacy_weights(reader)
        return KerasModel(_model_config(config, where), compile_, weights, reader, where)
    if suffix == ".json":
        try:
            size = path.stat().st_size
            if size > MAX_CONFIG_BYTES:
                raise ModelFileError("is larger than a model config can be", where)
            text = path.read_bytes()
        except FileNotFoundError:
            raise ModelFileError("no such file", where) from None
        except OSError as err:
            raise ModelFileError(f"cannot be read: {err.strerror}", where) from None
        config = parse_json(text, "the model JSON", where)
        return KerasModel(_model_config(config, where), _compile(config), None, None, where)
    raise ModelFileError(
        f"unsupported model file type {suffix or '(none)'!r}: kerspec imports .keras, .h5 and"
        " .json (model.to_json()) files", where)


def _model_config(config: Any, where: str) -> dict:
    if not isinstance(config, dict) or config.get("class_name") not in MODELS:
        found = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise ModelFileError(f"the config describes {found!r}, not a Keras Sequential or Functional"
                             " model", where)
    if not isinstance(config.get("config"), dict) or not isinstance(config["config"].get("layers"), list):
        raise ModelFileError("the model config has no list of layers", where)
    return config


def _compile(config: dict) -> dict | None:
    compile_ = config.get("compile_config") if isinstance(config, dict) else None
    return compile_ if isinstance(compile_, dict) and compile_ else None


def _keras3_weights(reader: H5Reader) -> dict[str, list[tuple[str, Any]]]:
    """`layers/<auto name>/...` groups, found by the layer name Keras writes beside their vars."""
    found: dict[str, list[tuple[str, Any]]] = {}

    def walk_layers(group) -> None:
        for auto in reader.names(group):
            layer_group = reader.child(group, auto)
            if not reader.is_group(layer_group):
                reader.fail(f"{layer_group.name} is not a layer group")
            nested = reader.child(layer_group, "layers")
            if nested is not None:
                walk_layers(nested)
                continue
            vars_ = reader.child(layer_group, "vars")
            name = reader.text_attribute(vars_, "name") if vars_ is not None else None
            if name is None:
                reader.fail(f"{layer_group.name} has no vars group naming its layer")
            if name in found:
                reader.fail(f"two layers named {name!r} (flattening nested models needs unique names)")
            found[name] = _variables(reader, layer_group, "")

    layers = reader.child(reader.file, "layers")
    if layers is None:
        reader.fail("holds no layers group: not a Keras 3 weights file")
    walk_layers(layers)
    return found


def _variables(reader: H5Reader, group, prefix: str) -> list[tuple[str, Any]]:
    arrays = []
    vars_ = reader.child(group, "vars")
    if vars_ is not None:
        names = reader.names(vars_)
        if sorted(names, key=_index) != sorted(names, key=lambda n: (len(n), n)):
            reader.fail(f"{vars_.name} holds datasets not named 0, 1, 2, ...")
        arrays += [(prefix, reader.child(vars_, n)) for n in sorted(names, key=_index)]
    for name in reader.names(group):
        if name in ("vars", "seed_generator"):
            continue  # a seed generator's state draws dropout masks; kerspec seeds its own
        if name not in WEIGHT_SCOPES:
            reader.fail(f"{group.name}/{name}: unexpected group in a layer's weights")
        arrays += _variables(reader, reader.child(group, name), prefix + WEIGHT_SCOPES[name])
    return arrays


def _index(name: str) -> int:
    return int(name) if name.isdigit() else -1


def _legacy_weights(reader: H5Reader) -> dict[str, list[tuple[str, Any]]] | None:
    """Keras 2's `model_weights/<layer>` groups, each with its `weight_names` in order."""
    root = reader.child(reader.file, "model_weights")
    if root is None:
        return None
    found = {}
    for layer in reader.string_list(root, "layer_names") or []:
        group = reader.child(root, layer)
        if group is None:
            reader.fail(f"model_weights has no group for layer {layer!r}")
        arrays = []
        for weight in reader.string_list(group, "weight_names") or []:
            dataset = reader.child(group, weight) if "//" not in weight else None
            if dataset is None:
                reader.fail(f"model_weights/{layer} names a weight {weight!r} it does not hold")
            parts = weight.split("/")
            scope = next((WEIGHT_SCOPES[f"{p.split('_')[0]}_layer"] for p in parts[1:-1]
                          if p.split("_")[0] in ("forward", "backward")), "")
            arrays.append((scope, dataset))
        found[layer] = arrays
    return found


# -- config -> spec ------------------------------------------------------------------------------


class SpecBuilder:
    """The Keras config's layers as spec entries, in an order where every input comes first."""

    def __init__(self, where: str):
        self.where = where
        self.problems: list[KerspecError] = []
        self.items = ItemReader(self.problem)
        self.entries: list[dict] = []
        self.first_use: dict[str, str] = {}  # Keras layer name -> its entry (the weights' owner)
        self.names: set[str] = set()
        self.dtypes: set[str] = set()
        self.flattened: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(KerspecError(f"{path.lstrip('.')}: {message}", self.where))

    def unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self.names:
            candidate, n = f"{name}_{n}", n + 1
        self.names.add(candidate)
        return candidate

    # ---- models

    def model(self, config: dict, path: str, inputs: list[str] | None) -> list[str]:
        """Add the model's layers; return the refs of its outputs. `inputs`: refs feeding a
        nested model's inputs (None at the top, where its InputLayers become Input entries)."""
        body = config["config"]
        layers = body.get("layers")
        if not isinstance(layers, list):
            self.problem(f"{path}.config.layers", "expected a list of layers")
            return []
        if config["class_name"] == "Sequential":
            return self._sequential(layers, body, path, inputs)
        return self._functional(layers, body, path, inputs)

    def _sequential(self, layers: list, body: dict, path: str, inputs: list[str] | None) -> list[str]:
        refs = inputs
        for i, layer in enumerate(layers):
            at = f"{path}.config.layers[{i}]"
            if not self._layer_dict(layer, at):
                continue
            if layer["class_name"] == "InputLayer":
                if refs is None:
                    refs = [self._input(layer, at)]
                continue
            if refs is None:  # Keras 2: the first layer carries the input's shape
                shape = (layer.get("config") or {}).get("batch_input_shape") or body.get("build_input_shape")
                if not isinstance(shape, list) or not shape:
                    self.problem(at, "a Sequential model without an input shape cannot be imported"
                                     " (build it, or give it an Input, before saving)")
                    return []
                refs = [self._add({"name": self.unique("input_layer"), "type": "Input",
                                   "shape": shape[1:]})]
            refs = self.apply(layer, refs, at)
        return refs or []

    def _functional(self, layers: list, body: dict, path: str, inputs: list[str] | None) -> list[str]:
        tensors: dict[tuple, str] = {}
        input_keys = _tensor_keys(body.get("input_layers"))
        pending = []
        by_name = {}
        for i, layer in enumerate(layers):
            at = f"{path}.config.layers[{i}]"
            if not self._layer_dict(layer, at):
                continue
            name = layer.get("name") or (layer.get("config") or {}).get("name")
            by_name[name] = at
            if layer["class_name"] == "InputLayer":
                if inputs is None:
                    tensors[(name, 0, 0)] = self._input(layer, at)
                continue
            nodes = layer.get("inbound_nodes")
            if not isinstance(nodes, list):
                self.problem(f"{at}.inbound_nodes", "expected a list of calls")
                continue
            pending += [(layer, at, k, node) for k, node in enumerate(nodes)]
        if inputs is not None:
            if len(input_keys) != len(inputs):
                self.problem(path, f"a nested model with {len(input_keys)} inputs is called with {len(inputs)}")
                return []
            tensors.update({(key[0], 0, 0): ref for key, ref in zip(input_keys, inputs)})
        skipped = _mask_ops(layers, body)
        pending = [p for p in pending if _layer_name(p[0]) not in skipped]
        done: set[tuple[str, int]] = set()
        while pending:
            # A layer's calls in their order: its first call is the one that owns the weights.
            ready = [p for p in pending if all(key in tensors for key in _node_keys(p[3]))
                     and (p[2] == 0 or (_layer_name(p[0]), p[2] - 1) in done)]
            if not ready:
                for layer, at, k, node in pending:
                    missing = [key[0] for key in _node_keys(node) if key not in tensors and key[0] not in by_name]
                    what = f"unknown layer(s) {', '.join(map(repr, missing))}" if missing else "a cycle"
                    self.problem(f"{at}.inbound_nodes[{k}]", f"its inputs cannot be resolved ({what})")
                return []
            for item in ready:
                pending.remove(item)
                layer, at, k, node = item
                refs = self._call(layer, at, k, node, tensors, skipped)
                name = _layer_name(layer)
                done.add((name, k))
                for t, ref in enumerate(refs):
                    tensors[(name, k, t)] = ref
        outputs = []
        for key in _tensor_keys(body.get("output_layers")):
            if key not in tensors:
                self.problem(f"{path}.config.output_layers", f"names {key[0]!r}, which is not computed")
            else:
                outputs.append(tensors[key])
        return outputs

    def _call(self, layer: dict, at: str, k: int, node: Any, tensors: dict, skipped: set[str]) -> list[str]:
        args, kwargs = _node_parts(node)
        for key, value in kwargs.items():
            if key == "mask" and value is not None and {t[0] for t in _tensor_refs(value)} <= skipped:
                continue  # the mask Keras computed from Masking or mask_zero; kerspec makes it too
            if not (key in CALL_DEFAULTS and value in CALL_DEFAULTS[key]):
                self.problem(f"{at}.inbound_nodes[{k}].kwargs.{key}",
                             f"kerspec cannot express the call argument {key}={_short(value)}")
        refs = [tensors[key] for key in _node_keys(node)]
        if not args:
            self.problem(f"{at}.inbound_nodes[{k}]", "a call without inputs")
        return self.apply(layer, refs, at)

    # ---- layers

    def _layer_dict(self, layer: Any, at: str) -> bool:
        if not isinstance(layer, dict) or not isinstance(layer.get("class_name"), str) or not isinstance(
                layer.get("config"), dict):
            self.problem(at, "expected a layer with class_name and config")
            return False
        return True

    def _input(self, layer: dict, at: str) -> str:
        config = layer["config"]
        shape = config.get("batch_shape") or config.get("batch_input_shape")
        if not isinstance(shape, list) or not shape:
            self.problem(f"{at}.config.batch_shape", "an input needs a shape")
            shape = [None, 1]
        entry = {"name": self.unique(config.get("name") or layer.get("name") or "input_layer"),
                 "type": "Input", "shape": shape[1:]}
        dtype = config.get("dtype")
        if isinstance(dtype, str) and dtype in ("int32", "int64"):
            entry["dtype"] = dtype
        for key in ("sparse", "ragged", "optional"):
            if config.get(key):
                self.problem(f"{at}.config.{key}", f"kerspec has no {key} inputs")
        return self._add(entry)

    def apply(self, layer: dict, refs: list[str], at: str) -> list[str]:
        """Add one call of `layer` to `refs`; its output refs. A second call shares the first's weights."""
        kind = layer["class_name"]
        name = layer["config"].get("name") or layer.get("name")
        if kind in MODELS:
            if name not in self.flattened:
                self.flattened.append(name)
            return self.model(layer, at, refs)
        link = refs[0] if len(refs) == 1 else refs
        if name in self.first_use:
            entry = {"name": self.unique(f"{name}_call"), "share": self.first_use[name], "from": link}
            outputs = self._outputs_of(self.first_use[name])
        else:
            entry = self.layer(layer, at)
            if entry is None:
                return [f"{name}?"] * 4  # refs for what follows; the problem is recorded
            entry = {"name": self.unique(name or entry["type"].lower()), **entry, "from": link}
            self.first_use[name] = entry["name"]
            outputs = _n_outputs(entry)
        self._add(entry)
        return [entry["name"] if i == 0 and outputs == 1 else f"{entry['name']}[{i}]" for i in range(outputs)]

    def _outputs_of(self, entry_name: str) -> int:
        entry = next(e for e in self.entries if e.get("name") == entry_name)
        return _n_outputs(entry)

    def _add(self, entry: dict) -> str:
        self.entries.append(entry)
        return entry["name"]

    def layer(self, layer: dict, at: str, inner: bool = False) -> dict | None:
        """One Keras layer config as a kerspec entry (without name and `from`), or None;
        `inner` for the layer a wrapper holds (Bidirectional zeroes its masked outputs)."""
        kind, config = layer["class_name"], layer["config"]
        label = f"{kind} {config.get('name')!r}"
        if kind == "Lambda":
            self.problem(at, f"{label} holds Python bytecode, which kerspec never runs; rewrite it as"
                             " a kerspec Lambda with an `expression` (docs/lambda.md) and import the rest")
            return None
        if is_custom(layer):
            self.problem(at, f"{label} is a custom class (Python code), which kerspec never runs;"
                             " rebuild it from kerspec's layers")
            return None
        try:
            kind = LAYERS.canonical(kind)
        except ValueError as err:
            self.problem(at, f"{label}: kerspec has no such layer ({err})")
            return None
        model = LAYERS.get(kind)
        fields = {f.alias or k for k, f in model.model_fields.items()} - {"type", "from", "input_shape"}
        entry: dict[str, Any] = {"type": kind}
        for key, value in config.items():
            place = f"{at}.config.{key}"
            if key == "trainable":
                if value is False:
                    entry["trainable"] = False
            elif key == "dtype":
                self._dtype(value, place)
            elif key in ("name", "batch_input_shape") or (key == "data_format" and value == "channels_last"):
                continue  # channels_last is what kerspec's data_format None means
            elif key in fields:
                converted = self._argument(key, value, place)
                if converted is not None or value is None:
                    entry[key] = converted
            elif not harmless(key, value) and not (key == "zero_output_for_mask" and (value is False or inner)):
                self.problem(place, f"{label}: kerspec's {kind} has no argument {key!r}"
                                    f" (Keras gives it {_short(value)})")
        if kind == "Bidirectional":
            _drop_mirrored_backward(entry)
        entry = without_defaults(model, entry)
        required = [f.alias or k for k, f in model.model_fields.items() if f.is_required()]
        first = [k for k in ("type", *required) if k in entry]
        return {**{k: entry[k] for k in first}, **{k: v for k, v in entry.items() if k not in first}}

    def _argument(self, key: str, value: Any, place: str) -> Any:
        if key in ("layer", "backward_layer"):
            if value is None:
                return None
            if not isinstance(value, dict) or not self._layer_dict(value, place):
                return None
            return self.layer(value, place, inner=True)
        if key.endswith("initializer"):
            return self.items.read(INITIALIZERS, value, place)
        if key.endswith("regularizer"):
            return self.items.read(REGULARIZERS, value, place)
        if key.endswith("constraint"):
            return self.items.read(CONSTRAINTS, value, place)
        if key.endswith("activation"):
            return self.items.read(ACTIVATIONS, value, place)
        if isinstance(value, dict):
            self.problem(place, f"kerspec cannot read the serialized object {_short(value)}")
            return None
        return value

    def _dtype(self, value: Any, place: str) -> None:
        if isinstance(value, dict):
            value = (value.get("config") or {}).get("name")
        if value in ("float32", "float64"):
            self.dtypes.add(value)
        elif value is not None:
            self.problem(place, f"kerspec computes in float32 or float64, not {_short(value)}")

    # ---- compile

    def compile_section(self, compile_: dict, outputs: list[str], keras_outputs: list[str]) -> dict | None:
        at = "compile_config"
        section: dict[str, Any] = {}
        optimizer = self.items.read(OPTIMIZERS, compile_.get("optimizer"), f"{at}.optimizer", floats32=True)
        if optimizer is not None:
            section["optimizer"] = optimizer
        loss = self._per_output(LOSSES, compile_.get("loss"), f"{at}.loss", outputs, keras_outputs)
        if loss is None:
            return None  # Keras compiled without a loss: nothing to train with
        section["loss"] = loss
        weights = compile_.get("loss_weights")
        if isinstance(weights, dict):
            section["loss_weights"] = {self._output(k, outputs, keras_outputs, f"{at}.loss_weights"): v
                                       for k, v in weights.items()}
        elif isinstance(weights, list) and len(weights) == len(outputs):
            section["loss_weights"] = dict(zip(outputs, weights))
        elif weights is not None:
            self.problem(f"{at}.loss_weights", f"expected one weight per output ({len(outputs)})")
        metrics = compile_.get("metrics")
        if metrics:
            section["metrics"] = self._metrics(metrics, f"{at}.metrics", outputs, keras_outputs)
        for key in ("weighted_metrics",):
            if compile_.get(key):
                self.problem(f"{at}.{key}", f"kerspec has no {key}")
        return section

    def _output(self, key: str, outputs: list[str], keras_outputs: list[str], place: str) -> str:
        if key in keras_outputs:
            return outputs[keras_outputs.index(key)]
        if key in outputs:
            return key
        self.problem(place, f"{key!r} is not an output of the model")
        return key

    def _per_output(self, registry, value: Any, place: str, outputs: list[str], keras_outputs: list[str]):
        if isinstance(value, list):
            if len(value) == 1:
                value = value[0]
            elif len(value) != len(outputs):
                self.problem(place, f"{len(value)} entries for {len(outputs)} outputs")
                return None
            else:
                return {out: self.items.read(registry, v, f"{place}[{i}]") for i, (out, v) in enumerate(zip(outputs, value))}
        if isinstance(value, dict) and "class_name" not in value:
            return {self._output(k, outputs, keras_outputs, place): self.items.read(registry, v, f"{place}.{k}")
                    for k, v in value.items()}
        return self.items.read(registry, value, place)

    def _metrics(self, value: Any, place: str, outputs: list[str], keras_outputs: list[str]):
        if isinstance(value, dict):
            return {self._output(k, outputs, keras_outputs, place): self._metric_list(v, f"{place}.{k}")
                    for k, v in value.items()}
        if isinstance(value, list) and len(outputs) > 1 and all(isinstance(v, list) or v is None for v in value):
            if len(value) != len(outputs):
                self.problem(place, f"{len(value)} metric lists for {len(outputs)} outputs")
                return []
            per_output = {out: self._metric_list(v, f"{place}[{i}]") for i, (out, v) in enumerate(zip(outputs, value))}
            return {k: v for k, v in per_output.items() if v}
        return self._metric_list(value, place)

    def _metric_list(self, value: Any, place: str) -> list:
        value = [] if value is None else value if isinstance(value, list) else [value]
        return [self.items.read(METRICS, v, f"{place}[{i}]") for i, v in enumerate(value)]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _n_outputs(entry: dict) -> int:
    """How many tensors a call of this entry gives: an RNN with return_state gives its states too."""
    inner = entry.get("layer") if entry.get("type") == "Bidirectional" else entry
    if not isinstance(inner, dict) or not inner.get("return_state"):
        return 1
    states = 2 if inner.get("type") == "LSTM" else 1
    return 1 + states * (2 if entry.get("type") == "Bidirectional" else 1)


def _drop_mirrored_backward(entry: dict) -> None:
    """Keras writes the backward layer a Bidirectional makes itself; a spec leaves it out."""
    forward, backward = entry.get("layer"), entry.get("backward_layer")
    if not isinstance(forward, dict) or not isinstance(backward, dict):
        return
    strip = lambda e: {k: v for k, v in e.items() if k not in ("name", "go_backwards")}
    if strip(forward) == strip(backward) and backward.get("go_backwards") != forward.get("go_backwards", False):
        del entry["backward_layer"]


def _tensor_keys(value: Any) -> list[tuple]:
    """`[["a", 0, 0], ["b", 0, 0]]`, `["a", 0, 0]` or `{"o": ["a", 0, 0]}` as (layer, node, tensor)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    keys = []
    for item in value or []:
        if isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str):
            keys.append((item[0], int(item[1]), int(item[2])))
    return keys


def output_keys(value: Any) -> list[str] | None:
    """The names of a model's outputs when Keras keyed them (a dict of outputs)."""
    return list(value) if isinstance(value, dict) else None


def _node_parts(node: Any) -> tuple[list, dict]:
    if isinstance(node, dict):  # Keras 3
        return list(node.get("args") or []), dict(node.get("kwargs") or {})
    if isinstance(node, list):  # Keras 2: [[layer, node, tensor, kwargs], ...]
        kwargs = {}
        for item in node:
            if isinstance(item, list) and len(item) > 3 and isinstance(item[3], dict):
                kwargs.update(item[3])
        return node, kwargs
    return [], {}


def _layer_name(layer: dict) -> str:
    return layer.get("name") or layer["config"].get("name")


def _mask_ops(layers: list, body: dict) -> set[str]:
    """Keras 3 records the mask a Masking layer or an Embedding with mask_zero makes as graph
    operations (NotEqual, Any) feeding later calls' `mask` arguments. Operations whose results
    only ever become masks are left out: kerspec propagates those masks itself."""
    ops = {_layer_name(layer) for layer in layers if isinstance(layer, dict) and isinstance(layer.get("config"), dict)
           and (str(layer.get("module", "")).startswith("keras.src.ops")
                or ("module" not in layer and layer.get("class_name") in MASK_OPS))}
    skipped = set(ops)
    while True:
        used = {key[0] for key in _tensor_keys(body.get("output_layers"))}
        for layer in layers:
            if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict) or _layer_name(layer) in skipped:
                continue
            for node in layer.get("inbound_nodes") or []:
                args, _ = _node_parts(node)
                used |= {t[0] for t in _tensor_refs(args)}
        kept = skipped & used
        if not kept:
            return skipped
        skipped -= kept


def _tensor_refs(value: Any) -> list[tuple]:
    return _node_keys({"args": [value]})


def _node_keys(node: Any) -> list[tuple]:
    """Every tensor a call reads, in order (a merge layer's list flattened)."""
    keys = []

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                history = (value.get("config") or {}).get("keras_history")
                if isinstance(history, list) and len(history) == 3:
                    keys.append((str(history[0]), int(history[1]), int(history[2])))
            return
        if isinstance(value, list):
            if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
                keys.append((value[0], value[1], int(value[2])))
                return
            for item in value:
                visit(item)

    args, _ = _node_parts(node)
    for arg in args:
        visit(arg)
    return keys


# -- the whole import ----------------------------------------------------------------------------


def import_keras(path: Path) -> Imported:
    """Read and translate a Keras model file; raise ImportProblems listing all that does not fit."""
    keras = read_keras_model(path)
    try:
        return _translate(keras, path)
    finally:
        if keras.reader is not None:
            keras.reader.close()


def _translate(keras: KerasModel, path: Path) -> Imported:
    builder = SpecBuilder(keras.where)
    outputs = builder.model(keras.config, "", None)  # places are JSON paths: config.layers[2]
    problems = builder.problems
    if len(builder.dtypes) > 1:
        builder.problem("config.layers", "the layers mix float32 and float64; kerspec uses one dtype")
    if problems:
        raise ImportProblems(problems)
    body = keras.config["config"]
    keras_outputs = output_keys(body.get("output_layers")) or outputs
    spec: dict[str, Any] = {"name": str(body.get("name") or path.stem)}
    notes = []
    if builder.flattened:
        spec["description"] = (f"Imported from {path.name}; the nested model(s)"
                               f" {', '.join(builder.flattened)} flattened into this one.")
        notes.append(f"flattened nested model(s): {', '.join(builder.flattened)}")
    else:
        spec["description"] = f"Imported from {path.name}."
    if builder.dtypes == {"float64"}:
        spec["dtype"] = "float64"
    spec["layers"] = _readable(builder.entries, keras.config["class_name"] == "Sequential")
    if outputs != [builder.entries[-1]["name"]]:
        spec["outputs"] = outputs
    if keras.compile is not None:
        section = builder.compile_section(keras.compile, outputs, keras_outputs)
        if builder.problems:
            raise ImportProblems(builder.problems)
        if section is not None:
            spec["compile"] = section
    weights = None
    if keras.weights is not None:
        weights = _weights(spec, keras)
    return Imported(spec, weights, notes)


def _readable(entries: list[dict], sequential: bool) -> list[dict]:
    """Leave out a `from` that names the entry just above, as a person writing the spec would."""
    out = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        link = entry.get("from")
        if i > 0 and link == entries[i - 1]["name"] and (sequential or "share" not in entry):
            del entry["from"]
        out.append(entry)
    return out


def _weights(spec: dict, keras: KerasModel) -> dict[str, dict[str, np.ndarray]]:
    """The Keras arrays for every kerspec weight, matched by layer, scope and order, shapes checked."""
    from kerspec.api import from_yaml

    model = from_yaml(spec_yaml(spec), seed=0)
    where = keras.where
    problems = []
    params: dict[str, dict[str, np.ndarray]] = {}
    for owner, specs in model.graph.weights.items():
        if not specs:
            continue
        found = keras.weights.get(owner)
        if found is None:
            problems.append(f"no weights for layer {owner!r}")
            continue
        scopes: dict[str, list] = {}
        for scope, dataset in found:
            scopes.setdefault(scope, []).append(dataset)
        params[owner] = {}
        for weight in specs:
            scope = weight.name.rpartition("/")[0] + "/" if "/" in weight.name else ""
            queue = scopes.get(scope) or []
            if not queue:
                problems.append(f"layer {owner!r} has no array for {weight.name}")
                continue
            array = keras.reader.array(queue.pop(0), weight.shape)
            params[owner][weight.name] = array.astype(model.dtype)
        extra = sum(len(queue) for queue in scopes.values())
        if extra:
            problems.append(f"layer {owner!r} holds {extra} array(s) more than kerspec's layer has")
    for name, arrays in keras.weights.items():
        if name not in model.graph.weights and arrays:
            problems.append(f"weights for {name!r}, which is not a layer of the model")
    if problems:
        raise ImportProblems([KerspecError(p, where) for p in problems])
    return params


# -- writing the spec ----------------------------------------------------------------------------


class _Flow(list):
    """A list written inline: `[8, 8, 1]`."""


def _flow_representer(dumper, data):
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, _flow_representer)


def spec_yaml(spec: dict) -> str:
    """The spec as a person would write it: one line per layer, sections in the usual order."""
    head = {k: v for k, v in spec.items() if k not in ("layers", "outputs", "compile")}
    text = yaml.dump(head, Dumper=_Dumper, sort_keys=False, width=100)
    text += "\nlayers:\n"
    for entry in spec["layers"]:
        line = yaml.dump(entry, Dumper=_Dumper, default_flow_style=True, sort_keys=False, width=10**6)
        text += f"  - {line.strip()}\n"
    if "outputs" in spec:
        text += "\n" + yaml.dump({"outputs": _Flow(spec["outputs"])}, Dumper=_Dumper, sort_keys=False)
    if "compile" in spec:
        text += "\ncompile:\n"
        for key, value in spec["compile"].items():
            line = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, sort_keys=False, width=10**6)
            text += f"  {key}: {line.removesuffix(chr(10)).removesuffix('...').strip()}\n"
    return text


def write_import(imported: Imported, output: Path, weights_out: Path | None, *,
                 overwrite: bool = False) -> list[Path]:
    """Write the spec, and the weights beside it (SPEC.npz unless `weights_out`); never over an
    existing file unless `overwrite`. The spec is written last, once its weights are in place."""
    from kerspec.io import atomic_write, save_weights

    text = imported.yaml()
    written = []
    if imported.weights is not None:
        weights_out = weights_out or output.with_suffix(".npz")
        if weights_out.resolve() == output.resolve():
            raise KerspecError("the weights and the spec would be the same file", str(output))
        if not overwrite:
            for path in (output, weights_out):
                if path.exists():
                    raise KerspecError("exists; kerspec does not replace it (choose another name, or"
                                       " pass --overwrite)", str(path))
        save_weights(weights_out, imported.weights, replace=overwrite)
        written.append(weights_out)
    atomic_write(output, lambda f: f.write(text.encode("utf-8")), replace=overwrite)
    return [output, *written]
