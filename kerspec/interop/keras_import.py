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

from kerspec.errors import KerspecError, Problems
from kerspec.interop.keras_file import KerasModel, read_keras_model
from kerspec.interop.keras_graph import output_keys
from kerspec.interop.keras_spec import SpecBuilder


class ImportProblems(Problems):
    """What in a Keras model kerspec cannot express, every item at its place in the config."""


@dataclass
class Imported:
    spec: dict
    weights: dict[str, dict[str, np.ndarray]] | None
    notes: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        return spec_yaml(self.spec)


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
