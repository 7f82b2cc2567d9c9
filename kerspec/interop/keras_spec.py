"""A Keras model config as spec entries: layers, their arguments and calls, nested models
flattened, and the compile section; every item the spec cannot say is collected as a problem at
its place in the config."""

from __future__ import annotations

from typing import Any

from kerspec.activations import ACTIVATIONS
from kerspec.constraints import CONSTRAINTS
from kerspec.errors import KerspecError
from kerspec.initializers import INITIALIZERS
from kerspec.interop.keras_config import ItemReader, harmless, is_custom, without_defaults
from kerspec.interop.keras_file import MODELS
from kerspec.interop.keras_graph import (
    layer_name,
    mask_ops,
    node_keys,
    node_parts,
    tensor_keys,
    tensor_refs,
)
from kerspec.layers import LAYERS
from kerspec.regularizers import REGULARIZERS
from kerspec.training.losses import LOSSES
from kerspec.training.metrics import METRICS
from kerspec.training.optimizers import OPTIMIZERS

# Keras layer-config keys that are not arguments, or not ones a spec carries.
NOT_ARGUMENTS = {"name", "trainable", "dtype"}
# A layer's call arguments Keras records that change nothing at inference when left as they are.
CALL_DEFAULTS = {"training": (None, False), "mask": (None,)}


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
        input_keys = tensor_keys(body.get("input_layers"))
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
        skipped = mask_ops(layers, body)
        pending = [p for p in pending if layer_name(p[0]) not in skipped]
        done: set[tuple[str, int]] = set()
        while pending:
            # A layer's calls in their order: its first call is the one that owns the weights.
            ready = [p for p in pending if all(key in tensors for key in node_keys(p[3]))
                     and (p[2] == 0 or (layer_name(p[0]), p[2] - 1) in done)]
            if not ready:
                for layer, at, k, node in pending:
                    missing = [key[0] for key in node_keys(node) if key not in tensors and key[0] not in by_name]
                    what = f"unknown layer(s) {', '.join(map(repr, missing))}" if missing else "a cycle"
                    self.problem(f"{at}.inbound_nodes[{k}]", f"its inputs cannot be resolved ({what})")
                return []
            for item in ready:
                pending.remove(item)
                layer, at, k, node = item
                refs = self._call(layer, at, k, node, tensors, skipped)
                name = layer_name(layer)
                done.add((name, k))
                for t, ref in enumerate(refs):
                    tensors[(name, k, t)] = ref
        outputs = []
        for key in tensor_keys(body.get("output_layers")):
            if key not in tensors:
                self.problem(f"{path}.config.output_layers", f"names {key[0]!r}, which is not computed")
            else:
                outputs.append(tensors[key])
        return outputs

    def _call(self, layer: dict, at: str, k: int, node: Any, tensors: dict, skipped: set[str]) -> list[str]:
        args, kwargs = node_parts(node)
        for key, value in kwargs.items():
            if key == "mask" and value is not None and {t[0] for t in tensor_refs(value)} <= skipped:
                continue  # the mask Keras computed from Masking or mask_zero; kerspec makes it too
            if not (key in CALL_DEFAULTS and value in CALL_DEFAULTS[key]):
                self.problem(f"{at}.inbound_nodes[{k}].kwargs.{key}",
                             f"kerspec cannot express the call argument {key}={_short(value)}")
        refs = [tensors[key] for key in node_keys(node)]
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
