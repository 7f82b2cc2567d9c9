"""What a run folder holds, and reading its run.json and spec.yaml back (files anyone may have
edited, so held to a schema and the spec's size limit)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    TypeAdapter,
)

from kerspec import io
from kerspec.errors import KerspecError, RunError
from kerspec.paths import MAX_NAME, inside, safe_folder_name
from kerspec.spec.source import MAX_SPEC_BYTES, parse_yaml

CHECKPOINT = "checkpoint.npz"


# The files of a run folder (ModelCheckpoint and CSVLogger files come from the spec).
RUN_FILES = ("spec.yaml", "run.json", "history.csv", CHECKPOINT, "weights.npz", "metrics.json")
MAX_RUN_JSON_BYTES = 1024 * 1024


class RunInfo(BaseModel):
    """run.json as read back: a file anyone may have edited, so held to this schema."""

    model_config = ConfigDict(extra="ignore", defer_build=True)  # built at the first read

    kerspec: str | None = Field(None, max_length=100)
    spec: str | None = Field(None, max_length=4096)
    spec_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    seed: NonNegativeInt | None = Field(None, lt=2**128)
    started: datetime | None = None
    ended: datetime | None = None
    status: Literal["running", "finished", "stopped", "interrupted", "failed"] = "running"
    epochs: PositiveInt | None = None
    epochs_done: NonNegativeInt = 0
    resumed: list[datetime] = Field(default_factory=list, max_length=100_000)
    message: str | None = Field(None, max_length=10_000)


def read_run_info(path: Path) -> RunInfo | None:
    """A run folder's run.json, None when it has none; RunError when it is damaged."""
    return read_run_json(path, "run.json", _RUN_INFO)


def read_run_json(path: Path, name: str, schema: TypeAdapter) -> Any:
    """The JSON file `name` of a run folder held to `schema`, None when the folder has none."""
    file = Path(path) / name
    if not file.is_file():
        return None
    return io.read_json_as(file, schema, MAX_RUN_JSON_BYTES, f"a kerspec {name}")


_RUN_INFO = TypeAdapter(RunInfo)
# A JSON file read back whole, to be updated and written again (a sweep's run.json, sweep.json).
JSON_OBJECT = TypeAdapter(dict[str, Any])


def new_run_dir(root: Path, name: str) -> Path:
    """runs/NAME-TIME: a spec's `name` is checked when it is validated (kerspec.paths); a spec
    file's stem, the default, is made into a name here. Either way it stays inside `root`."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = safe_folder_name(name)[: MAX_NAME - 20]
    path = inside(root, f"{base}-{stamp}")
    suffix = 1
    while path.exists() or path.is_symlink():
        path = inside(root, f"{base}-{stamp}-{suffix}")
        suffix += 1
    return path


def run_seed(path: Path) -> int | None:
    """The seed a run folder was trained with (to resume it with the same draws)."""
    info = read_run_info(path)
    if info and info.seed is not None:
        return info.seed
    spec = read_run_spec(
        path, missing_ok=True
    )  # a run killed before run.json: it holds the seed too
    seed = spec.get("seed") if isinstance(spec, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else None


def read_run_spec(path: Path, *, missing_ok: bool = False) -> Any:
    """A run folder's spec.yaml, read with the same guards as any spec."""
    file = Path(path) / "spec.yaml"
    try:
        if missing_ok and not file.is_file():
            return None
        if file.stat().st_size > MAX_SPEC_BYTES:
            raise RunError(
                f"is larger than {MAX_SPEC_BYTES:,} bytes; not a kerspec spec", str(file)
            )
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RunError(
            f"cannot be read: {getattr(err, 'strerror', None) or err}", str(file)
        ) from None
    try:
        return parse_yaml(text, str(file))[0]
    except KerspecError as err:
        raise RunError(f"not a readable spec: {err}", str(file)) from None


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
