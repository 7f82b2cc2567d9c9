"""Reading a Keras model file for `kerspec import`: a Keras 3 `.keras` archive, a
`model.to_json()` file or a legacy `.h5` model, as its config (data, never run), its compile
config and its weight arrays by layer name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerspec.interop.archive import (
    MAX_CONFIG_BYTES,
    MAX_WEIGHTS_BYTES,
    H5Reader,
    ModelFileError,
    parse_json,
    read_zip,
)

MODELS = ("Sequential", "Functional", "Model")
KERAS_ARCHIVE = {"config.json": MAX_CONFIG_BYTES, "metadata.json": MAX_CONFIG_BYTES,
                 "model.weights.h5": MAX_WEIGHTS_BYTES}
# How a sub-object of a Keras layer names the weights kerspec keys under it.
WEIGHT_SCOPES = {"cell": "", "layer": "", "forward_layer": "forward/", "backward_layer": "backward/"}


@dataclass
class KerasModel:
    """A Keras model file, read: its config, compile config and weight arrays by layer name."""

    config: dict
    compile: dict | None
    weights: dict[str, list[tuple[str, Any]]] | None  # layer -> [(kerspec prefix, dataset)]
    reader: H5Reader | None
    where: str


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
