"""`kerspec validate`: every check `train` makes before reading data, and, optionally, the data.

A spec's problems come out together: its schema, its graph, then what training would refuse
(loss, metrics and loss_weights naming outputs, callback monitors, class_weight). Data-file
problems (missing, unreadable, columns, shapes) are reported at the spec's `data:` entry.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from kerspec import api
from kerspec.errors import GraphError, KerspecError, Problems
from kerspec.spec import LoadedSpec, Spec
from kerspec.spec.data import PathData
from kerspec.spec.source import is_sweep, parse_yaml, read_spec_text

DATA_ENTRIES = ("train", "validation", "test")


def check_file(
    path: Path, *, data: bool | None = None
) -> tuple[list[KerspecError], list[KerspecError]]:
    """The problems and notes of a spec, or of a sweep file checked as `kerspec sweep` checks it
    (the sweep package is imported for sweep files only)."""
    try:
        raw, _ = parse_yaml(read_spec_text(path, str(path)), str(path))
    except KerspecError:
        raw = None  # check_spec says why
    if is_sweep(raw):
        from kerspec.sweep.load import sweep_file_problems

        return sweep_file_problems(path), []
    return check_spec(path, data=data)


def check_spec(
    path: Path, *, data: bool | None = None
) -> tuple[list[KerspecError], list[KerspecError]]:
    """Every problem of the spec at `path`, and its notes; `data` None checks the data files
    when they all exist."""
    try:
        model = api.load(path, seed=0)
    except Problems as err:
        return sorted([*err.problems, *_model_anyway(path, err.problems)], key=_place), []
    except KerspecError as err:
        return [err], []
    problems = model.problems()
    if data is None:
        data = all(file.exists() for file in data_files(model))
    if data:
        problems += data_problems(model)
    return sorted(problems, key=_place), model.loaded.notes


# Top-level sections the model (layers, links, shapes) does not depend on.
SETTINGS = ("compile", "fit", "data")


def _model_anyway(path: Path, problems: list[KerspecError]) -> list[KerspecError]:
    """When only compile, fit or data are invalid, the rest of the spec is still checked (the
    graph, and the training checks of the valid sections): their problems, to report together."""
    try:
        raw, source = parse_yaml(read_spec_text(path, str(path)), str(path))
    except KerspecError:
        return []
    if not isinstance(raw, dict) or not isinstance(source.root, yaml.MappingNode):
        return []
    starts = sorted(
        (key.start_mark.line + 1, key.value)
        for key, _ in source.root.value
        if isinstance(key, yaml.ScalarNode)
    )
    faulty = set()
    for problem in problems:
        line = problem.where.line if problem.where else None
        section = next((key for start, key in reversed(starts) if line and start <= line), None)
        if section not in SETTINGS:
            return []  # the model itself is invalid: nothing further can be checked
        faulty.add(section)
    rest = {key: value for key, value in raw.items() if key not in faulty}
    try:
        model = api.Model(LoadedSpec(Spec.model_validate(rest), source, path, rest), seed=0)
    except Problems as err:
        return list(err.problems)
    except (KerspecError, ValidationError):
        return []
    return model.problems()


def _place(problem: KerspecError) -> tuple[int, int]:
    where = problem.where
    return (where.line or 0, where.column or 0) if where else (0, 0)


def data_files(model: api.Model) -> list[Path]:
    section = model.spec.data
    entries = [getattr(section, which) for which in DATA_ENTRIES] if section else []
    return [model.loaded.base_dir / e.path for e in entries if isinstance(e, PathData)]


def data_problems(model: api.Model) -> list[KerspecError]:
    """Each of the spec's data entries loaded against the model, a problem at its spec line.

    Where the spec's compile section is wrong, targets cannot be checked: only the files'
    existence is.
    """
    section = model.spec.data
    if section is None:
        return []
    problems = []
    for which in DATA_ENTRIES:
        entry = getattr(section, which)
        if entry is None:
            continue
        where = model.loaded.source.where(("data", which))
        try:
            dataset = model.dataset(which)
            if which == "train" and dataset.sample_weight:
                problems += model.class_weight_problems(with_sample_weights=True)
        except GraphError:
            if isinstance(entry, PathData) and not (model.loaded.base_dir / entry.path).exists():
                problems.append(KerspecError(f"data.{which}: file not found: {entry.path}", where))
        except KerspecError as err:
            problems.append(KerspecError(f"data.{which}: {err}", where))
    return problems
