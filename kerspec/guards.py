"""Resource guards: refuse what cannot fit in this machine's memory before allocating it.

A spec is text, so `units: 1000000000` costs nothing to write and 4 GB per input feature to
build. Without a check the process allocates until the operating system kills it, with no
message. These estimates come from the compiled graph's shapes (weights) and from array headers
(data files), so nothing large is allocated to find out that it is too large.

The estimates are lower bounds: layers keep more than their outputs for the backward pass, and
initializers and convolutions use temporaries. A model refused here certainly does not fit; a
model accepted here may still run out of memory. `docs/security.md` says what this promises.
"""

from __future__ import annotations

import math
import os
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from kerspec.errors import GraphError, KerspecError, Where

if TYPE_CHECKING:
    from kerspec.graph.compile import Graph
    from kerspec.spec import LoadedSpec

# Training keeps, for every weight, its gradient and up to two optimizer slots (Adam's m and v).
TRAINING_COPIES = 4
# Training keeps each layer's output and about as much again (inputs, pre-activations) for the
# backward pass.
ACTIVATION_COPIES = 2

# Every way numpy's .npy/.npz readers fail on damaged or hostile bytes. The header is a Python
# literal read with ast.literal_eval, so a malformed one raises what the tokenizer or parser does.
READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    tokenize.TokenError,
    SyntaxError,
    RecursionError,
    MemoryError,
    OverflowError,
    # zipfile: an unknown compression method, an encrypted member.
    NotImplementedError,
    RuntimeError,
)


def describe_read_error(err: BaseException) -> str:
    """What went wrong reading an array file, in a user's words (not numpy's advice to trust it)."""
    text = str(err)
    if "allow_pickle" in text or "Object arrays" in text or "pickled" in text:
        return "it holds Python objects, which kerspec never loads (allow_pickle=False)"
    if isinstance(err, (tokenize.TokenError, SyntaxError, RecursionError)):
        return "its array header is malformed"
    if isinstance(err, MemoryError):
        return "not enough memory to read it"
    return text.splitlines()[0] if text else type(err).__name__


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


def _where(loaded: LoadedSpec, path: tuple) -> Where:
    """The place of a spec entry, or the `--set` option that changed something inside it."""
    for changed, option in loaded.source.overrides.items():
        if changed[: len(path)] == path:
            return Where(f"--set {option}")
    return loaded.source.where(path)


def check_model(graph: Graph, loaded: LoadedSpec, batch_size: int | None = None) -> None:
    """Refuse a model whose weights, or whose training on one batch, cannot fit in memory.

    The compiler calls this once shapes are known, before any weight is allocated.
    `batch_size` defaults to the spec's fit.batch_size.
    """
    available = available_memory()
    if available is None:
        return
    itemsize = np.dtype(graph.dtype).itemsize
    if batch_size is None:
        batch_size = loaded.spec.fit.batch_size
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
        (f"{node.type} {owner!r}: ", _where(loaded, ("layers", node.entry)))
        if node is not None and largest > weights / 2
        else ("", _where(loaded, ("layers",)))
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
        label, where = "", _where(loaded, ("fit", "batch_size"))
        if outputs[widest.name] * 2 > sum(outputs.values()):
            label = f"{widest.type} {widest.name!r}: "
            where = _where(loaded, ("layers", widest.entry))
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


def _npy_header(fp: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, read without reading (or allocating) the data."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return shape, dtype


def _check_array_size(shape, dtype: np.dtype, stored: int) -> None:
    """The header's claim against the bytes that hold the data, and against free memory."""
    if dtype.hasobject:
        # np.load refuses these itself, with allow_pickle=False; say why in the caller's words.
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    need = _size(shape) * dtype.itemsize
    if need > stored:
        raise ValueError(
            f"its header claims shape {tuple(shape)} of {dtype} ({format_bytes(need)}) but the"
            f" file holds {format_bytes(stored)} of data (truncated or forged)"
        )
    available = available_memory()
    if available is not None and need > available:
        raise ValueError(
            f"the array of shape {tuple(shape)} needs {format_bytes(need)}; this machine has"
            f" {format_bytes(available)} available"
        )


def check_npy_file(path: Path) -> None:
    """Raise ValueError when an .npy file's header promises data the file does not hold."""
    with open(path, "rb") as fp:
        if fp.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            return  # not an .npy file: np.load says what it is (an .npz, a pickle it refuses)
        fp.seek(0)
        shape, dtype = _npy_header(fp)
        stored = os.fstat(fp.fileno()).st_size - fp.tell()
    _check_array_size(shape, dtype, stored)


def read_npz_array(archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """One array of an open .npz archive, its header checked before its data is read.

    A zip member's size is in the archive's directory, and the member cannot yield more bytes
    than that, so a header claiming more (a forged shape, a decompression bomb) is refused here.
    """
    names = archive.zip.namelist()
    member = key if key in names else f"{key}.npy"
    info = archive.zip.getinfo(member)
    with archive.zip.open(member) as fp:
        if fp.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            raise ValueError(f"member {member!r} is not a NumPy array")
    with archive.zip.open(member) as fp:
        shape, dtype = _npy_header(fp)
        header = fp.tell()
    _check_array_size(shape, dtype, info.file_size - header)
    return archive[key]
