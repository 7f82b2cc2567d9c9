"""The tensors of a Keras functional config: which layer outputs each call reads, in Keras 3's
and Keras 2's node formats, and which recorded operations only make masks."""

from __future__ import annotations

from typing import Any

# The operations Keras 3 records to make masks (legacy .h5 configs do not say their module).
MASK_OPS = {"NotEqual", "Equal", "Any", "All", "LogicalAnd", "LogicalOr", "Cast", "ExpandDims", "Squeeze"}


def tensor_keys(value: Any) -> list[tuple]:
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


def node_parts(node: Any) -> tuple[list, dict]:
    if isinstance(node, dict):  # Keras 3
        return list(node.get("args") or []), dict(node.get("kwargs") or {})
    if isinstance(node, list):  # Keras 2: [[layer, node, tensor, kwargs], ...]
        kwargs = {}
        for item in node:
            if isinstance(item, list) and len(item) > 3 and isinstance(item[3], dict):
                kwargs.update(item[3])
        return node, kwargs
    return [], {}


def layer_name(layer: dict) -> str:
    return layer.get("name") or layer["config"].get("name")


def mask_ops(layers: list, body: dict) -> set[str]:
    """Keras 3 records the mask a Masking layer or an Embedding with mask_zero makes as graph
    operations (NotEqual, Any) feeding later calls' `mask` arguments. Operations whose results
    only ever become masks are left out: kerspec propagates those masks itself."""
    ops = {layer_name(layer) for layer in layers if isinstance(layer, dict) and isinstance(layer.get("config"), dict)
           and (str(layer.get("module", "")).startswith("keras.src.ops")
                or ("module" not in layer and layer.get("class_name") in MASK_OPS))}
    skipped = set(ops)
    while True:
        used = {key[0] for key in tensor_keys(body.get("output_layers"))}
        for layer in layers:
            if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict) or layer_name(layer) in skipped:
                continue
            for node in layer.get("inbound_nodes") or []:
                args, _ = node_parts(node)
                used |= {t[0] for t in tensor_refs(args)}
        kept = skipped & used
        if not kept:
            return skipped
        skipped -= kept


def tensor_refs(value: Any) -> list[tuple]:
    return node_keys({"args": [value]})


def node_keys(node: Any) -> list[tuple]:
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

    args, _ = node_parts(node)
    for arg in args:
        visit(arg)
    return keys
