"""A checkpoint read back is hostile input: someone may have edited, truncated or forged it.

`checkpoint_meta` holds its `meta` entry to the CheckpointMeta schema; `check_checkpoint` holds
every array to what the compiled model and optimizer have (the same keys, shapes and dtypes, and
finite values) and every callback's state to that callback's schema. Both only read, and run
before training touches the weights or the run folder, so a refused checkpoint leaves both as
they were.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError

from kerspec.errors import RunError, first_error

if TYPE_CHECKING:
    from kerspec.training.session import Session

# The meta entry carries the callbacks' states, a CSVLogger's whole log among them.
MAX_META_CHARACTERS = 128 * 1024 * 1024
_U128 = 2**128


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _PCG64Inner(_Strict):
    state: int = Field(ge=0, lt=_U128)
    inc: int = Field(ge=0, lt=_U128)


class GeneratorState(_Strict):
    """numpy's PCG64 bit generator state, as `bit_generator.state` gives it."""

    bit_generator: Literal["PCG64"]
    state: _PCG64Inner
    has_uint32: Literal[0, 1]
    uinteger: int = Field(ge=0, lt=2**32)


class CheckpointMeta(_Strict):
    format: Literal[1]
    epoch: NonNegativeInt = Field(lt=2**31)
    epochs: PositiveInt = Field(lt=2**31)
    stop_training: bool
    shuffle_rng: GeneratorState
    noise_rng: GeneratorState
    callbacks: dict[str, dict[str, Any]]
    # Absent from checkpoints of kerspec before it kept a run on one count: chosen afresh then.
    blas_threads: NonNegativeInt = Field(0, le=4096)


def checkpoint_meta(arrays: dict[str, np.ndarray], file: str) -> CheckpointMeta:
    meta = arrays.get("meta")
    if meta is None:
        raise RunError("has no meta entry; not a kerspec checkpoint", file)
    if meta.dtype.kind != "U" or meta.shape != () or meta.dtype.itemsize // 4 > MAX_META_CHARACTERS:
        raise RunError("its meta entry is not a JSON text; not a kerspec checkpoint", file)
    try:
        return CheckpointMeta.model_validate_json(str(meta))
    except ValidationError as err:
        if err.errors()[0]["loc"] == ("format",):
            raise RunError("written by another kerspec version (its format is not 1)", file) from None
        raise RunError(f"its meta entry is damaged ({first_error(err)})", file) from None


def check_checkpoint(arrays: dict[str, np.ndarray], session: Session, file: str) -> CheckpointMeta:
    """Raise RunError(`file: what is wrong`) unless `arrays` can be restored into `session`."""
    meta = checkpoint_meta(arrays, file)
    expected = session.checkpoint()
    problems = []
    fixed = [k for k in expected if k != "meta" and not k.startswith("callbacks/")]
    missing = [k for k in fixed if k not in arrays]
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    states = dict(session.stateful())
    for key, array in arrays.items():
        if key == "meta" or key in missing:
            continue
        if key.startswith("callbacks/"):
            owner, _, weight = key.removeprefix("callbacks/").partition("/")
            target = expected.get(f"weights/{weight}")
            if owner not in states or target is None:
                problems.append(f"unexpected {_shown(key)}")
                continue
        else:
            target = expected.get(key)
            if target is None:
                problems.append(f"unexpected {_shown(key)}")
                continue
        problem = _compare(key, array, target)
        if problem:
            problems.append(problem)
    for key, callback in states.items():
        values = meta.callbacks.get(key)
        if values is None:
            problems.append(f"meta has no state for the callback {key}")
            continue
        prefix = f"callbacks/{key}/"
        own = {k[len(prefix):] for k in arrays if k.startswith(prefix)}
        problem = callback.check_state(values, own, [k.removeprefix("weights/") for k in expected if k.startswith("weights/")])
        if problem:
            problems.append(f"meta: callback {key}: {problem}")
    unknown = [k for k in meta.callbacks if k not in states]
    if unknown:
        problems.append(f"meta: state of a callback this spec does not have: {_shown(unknown[0])}")
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise RunError(f"does not fit this model: {shown}", file)
    return meta


def _compare(key: str, array: np.ndarray, target: np.ndarray) -> str | None:
    if array.shape != target.shape:
        return f"{key} has shape {array.shape}, the model needs {target.shape}"
    if array.dtype != target.dtype:
        return f"{key} has dtype {array.dtype}, the model needs {target.dtype}"
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        return f"{key} holds NaN or infinite values"
    return None


def _shown(key: str) -> str:
    return repr(key[:60]) if not key.isprintable() or len(key) > 60 else key
