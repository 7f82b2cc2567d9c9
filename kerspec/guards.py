"""Resource guards: refuse what cannot fit in this machine's memory before allocating it.

A spec is text, so `units: 1000000000` costs nothing to write and 4 GB per input feature to
build. Without a check the process allocates until the operating system kills it, with no
message. These estimates come from the compiled graph's shapes (weights) and from array headers
(data files, read by kerspec.io.npz), so nothing large is allocated to find out that it is too
large.

The estimates are lower bounds: layers keep more than their outputs for the backward pass, and
initializers and convolutions use temporaries. A model refused here certainly does not fit; a
model accepted here may still run out of memory. `docs/security.md` says what this promises.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from kerspec.errors import GraphError, KerspecError, Where

# Training keeps, for every weight, its gradient and up to two optimizer slots (Adam's m and v).
TRAINING_COPIES = 4
# Training keeps each layer's output and about as much again (inputs, pre-activations) for the
# backward pass.
ACTIVATION_COPIES = 2

def available_memory() -> int | None:
    """Bytes this process can still allocate, None if unknown: the least of the memory the
    machine has available (MemAvailable), what the process's address-space limit (RLIMIT_AS,
    `ulimit -v`) leaves, and what its cgroup's memory limit (v2 or v1) leaves."""
    found = [n for n in (_machine_available(), _rlimit_left(), _cgroup_left()) if n is not None]
    return min(found) if found else None


def _machine_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _rlimit_left() -> int | None:
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError, AttributeError):
        return None
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return max(limit - int(line.split()[1]) * 1024, 0)
    except (OSError, ValueError, IndexError):
        pass
    return limit


def _cgroup_left(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The process's own cgroup (from /proc/self/cgroup), else the root's: limit minus usage."""
    paths = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            if hierarchy == "0":
                paths.append((root / path.lstrip("/"), "memory.max", "memory.current"))
            elif "memory" in controllers.split(","):
                paths.append((root / "memory" / path.lstrip("/"), "memory.limit_in_bytes", "memory.usage_in_bytes"))
    except (OSError, ValueError):
        pass
    paths += [(root, "memory.max", "memory.current"), (root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes")]
    for folder, limit_file, usage_file in paths:
        try:
            limit = (folder / limit_file).read_text().strip()
            used = int((folder / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:  # v1 writes "no limit" as a huge number
            return None
        return max(int(limit) - used, 0)
    return None


def format_bytes(n: float) -> str:
    """`3.7 TB`: decimal units, as disk and memory sizes are usually given."""
    units = ("bytes", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    for unit in units:
        if n < 1000 or unit == units[-1]:
            break
        n /= 1000
    if n >= 1000:
        return f"{n * 1e24:.1e} bytes"
    return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"


def _size(shape) -> int:
    """Elements of a shape; an unknown dimension (a variable sequence length) counts as 1."""
    return math.prod(1 if d is None else int(d) for d in shape)


def _where(source, path: tuple) -> Where:
    """The place of a spec entry, or the `--set` option that changed something inside it."""
    for changed, option in source.overrides.items():
        if changed[: len(path)] == path:
            return Where(f"--set {option}")
    return source.where(path)


def check_model(graph, source, batch_size: int) -> None:
    """Refuse a model whose weights, or whose training on one batch of `batch_size`, cannot fit
    in memory; the API calls this once the graph is compiled, before any weight is allocated.

    `graph` is the compiled kerspec.graph.Graph and `source` the spec's kerspec.spec.source.Source
    (to place a refusal at its line). Neither is imported here, not even for annotations: the
    graph and the spec import modules that import this one.
    """
    available = available_memory()
    if available is None:
        return
    itemsize = np.dtype(graph.dtype).itemsize
    first_node = {}
    for node in graph.nodes:
        first_node.setdefault(node.owner, node)
    per_owner = {
        owner: sum(_size(s.shape) for s in specs) * itemsize
        for owner, specs in graph.weights.items()
    }
    weights = sum(per_owner.values())
    have = f"this machine has {format_bytes(available)} available"
    owner, largest = max(per_owner.items(), key=lambda item: item[1], default=(None, 0))
    node = first_node.get(owner)
    at_layer = (
        (f"{node.type} {owner!r}: ", _where(source, ("layers", node.entry)))
        if node is not None and largest > weights / 2
        else ("", _where(source, ("layers",)))
    )
    if weights > available:
        label, where = at_layer
        what = "the weights alone need" if label else "the model's weights need"
        raise GraphError([KerspecError(f"{label}{what} {format_bytes(weights)}; {have}", where)])
    outputs = {node.name: sum(_size(shape) for shape in node.output_shapes) for node in graph.nodes}
    per_sample = sum(outputs.values()) * itemsize * ACTIVATION_COPIES
    state = weights * TRAINING_COPIES
    batch = per_sample * batch_size
    training = state + batch
    if training <= available:
        return
    message = (
        f"training needs at least {format_bytes(training)} (weights, gradients and optimizer"
        f" slots {format_bytes(state)}; activations of a batch of {batch_size:,}"
        f" {format_bytes(batch)}); {have}"
    )
    label, where = at_layer
    if state < batch:
        widest = max(graph.nodes, key=lambda node: outputs[node.name])
        label, where = "", _where(source, ("fit", "batch_size"))
        if outputs[widest.name] * 2 > sum(outputs.values()):
            label = f"{widest.type} {widest.name!r}: "
            where = _where(source, ("layers", widest.entry))
        if state + per_sample <= available:
            message += "; a smaller fit.batch_size needs less"
    raise GraphError([KerspecError(label + message, where)])


def check_allocation(what: str, shapes: list[tuple[int, ...]], itemsize: int) -> None:
    """Raise ValueError when arrays of these shapes together cannot fit in memory."""
    need = sum(_size(shape) for shape in shapes) * itemsize
    available = available_memory()
    if available is not None and need > available:
        raise ValueError(
            f"{what} needs {format_bytes(need)}; this machine has {format_bytes(available)} available"
        )
