"""Sweep files -> a checked `LoadedSweep`, every problem at its FILE:LINE:COL before anything runs.

Parameters become the same `--set PATH=VALUE` options `kerspec train` takes, so a sweep varies
exactly what `--set` can change. Each value a parameter can take (every grid or choice value,
both ends of a range, the constant) is applied to the spec and the result loaded and compiled as
`kerspec train` would, so an unknown path or a value the field refuses is found here.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kerspec.errors import KerspecError, Problems, SpecError, Where
from kerspec.spec import located_problems
from kerspec.spec.source import Source, is_sweep, parse_yaml, read_spec_text
from kerspec.sweep.schema import Choice, Grid, LogUniform, RandInt, Sweep, Uniform

SWEEP_SECTIONS = {(): Sweep}


def set_option(path: str, value: Any) -> str:
    """`PATH=VALUE` with VALUE as YAML flow text, read back by `--set` as the same value."""
    if hasattr(value, "item") and not isinstance(value, list | dict):
        value = value.item()  # numpy scalars from the search algorithms
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True)
    return f"{path}={text.strip().removesuffix('...').strip()}"


@dataclass(frozen=True)
class Parameter:
    path: str
    value: Any  # a distribution from schema.py, or the constant
    where: Where

    @property
    def constant(self) -> bool:
        return not isinstance(self.value, Grid | Choice | Uniform | LogUniform | RandInt)

    def candidates(self) -> list[tuple[Any, tuple]]:
        """Values to try, each with its path inside the parameter's entry (for locations)."""
        value = self.value
        if isinstance(value, Grid):
            return [(v, ("grid", i)) for i, v in enumerate(value.grid)]
        if isinstance(value, Choice):
            return [(v, ("choice", i)) for i, v in enumerate(value.choice)]
        if self.constant:
            return [(value, ())]
        key = next(iter(value.model_dump()))
        return [(bound, (key, i)) for i, bound in enumerate(value.bounds)]


@dataclass
class LoadedSweep:
    sweep: Sweep
    path: Path
    source: Source
    raw: dict
    spec_path: Path
    parameters: list[Parameter]
    mode: str  # min or max
    epochs: int  # the most any trial runs (ASHA's horizon)
    validation: bool

    @property
    def name(self) -> str:
        return self.sweep.name or self.path.stem

    def constants(self) -> list[str]:
        return [set_option(p.path, p.value) for p in self.parameters if p.constant]


def load_sweep(path: str | Path) -> LoadedSweep:
    path = Path(path)
    text = read_spec_text(path, str(path))
    data, source = parse_yaml(text, str(path))
    return check_sweep(data, source, path)


def check_sweep(data: Any, source: Source, path: Path) -> LoadedSweep:
    if not isinstance(data, dict):
        raise SpecError([KerspecError("a sweep file must be a mapping with 'spec', 'metric' and"
                                      " 'parameters'", source.where(()))])
    try:
        sweep = Sweep.model_validate(data)
    except ValidationError as err:
        raise SpecError(located_problems(err, data, source, SWEEP_SECTIONS)) from None
    spec_path = path.parent / sweep.spec
    if not spec_path.is_file():
        raise SpecError([KerspecError(f"no such spec file: {spec_path}", source.where(("spec",)))])
    from kerspec import api  # the spec and its graph are loaded only once the file is well formed

    model = api.load(spec_path, seed=0)  # the spec's own problems, at their own lines
    parameters = [
        Parameter(key, value, source.where(("parameters", key), at_key=True))
        for key, value in sweep.parameters.items()
    ]
    problems: list[KerspecError] = []
    for parameter in parameters:
        problems += _check_search(sweep.search, parameter)
        for value, inner in parameter.candidates():
            where = source.where(("parameters", parameter.path, *inner))
            found = _check_value(spec_path, parameter.path, value, where)
            problems += found
            if found:  # one message per parameter: a bad path would fail every value alike
                break
    validation = _has_validation(model.spec)
    directions = model.logged_names(validation=validation)
    if sweep.metric not in directions:
        close = difflib.get_close_matches(sweep.metric, list(directions), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append(KerspecError(
            f"the model does not log {sweep.metric!r} (it logs: {', '.join(directions)}){hint}",
            source.where(("metric",))))
    epochs = max([model.spec.fit.epochs, *_epochs(parameters)])
    if sweep.scheduler is not None and sweep.scheduler.grace_period > epochs:
        problems.append(KerspecError(
            f"grace_period {sweep.scheduler.grace_period} is more than the {epochs} epochs any"
            " trial runs, so no trial could be stopped", source.where(("scheduler", "grace_period"))))
    if problems:
        raise SpecError(problems)
    mode = directions[sweep.metric] if sweep.mode == "auto" else sweep.mode
    return LoadedSweep(sweep, path, source, data, spec_path, parameters, mode, epochs, validation)


def _check_value(spec_path: Path, key: str, value: Any, where: Where) -> list[KerspecError]:
    from kerspec import api

    option = set_option(key, value)
    try:
        api.load(spec_path, [option], seed=0)
    except Problems as err:
        found = err.problems
    except KerspecError as err:
        found = [err]
    else:
        return []
    messages = []
    for problem in found:
        # The problem is at the option (the value) or somewhere the value reaches in the spec.
        at_option = problem.where is None or problem.where.file.startswith("--set ")
        messages.append(problem.message if at_option else f"{problem.message} (at {problem.where})")
    return [KerspecError(f"--set {option}: {m}", where) for m in messages]


def _check_search(search: str, parameter: Parameter) -> list[KerspecError]:
    value = parameter.value
    if search == "grid" and isinstance(value, Uniform | LogUniform | RandInt):
        return [KerspecError(f"{parameter.path}: search: grid needs values to go through"
                             " (grid or choice), not a range", parameter.where)]
    if search == "optuna" and isinstance(value, Grid):
        return [KerspecError(f"{parameter.path}: search: optuna draws every value; use choice"
                             " instead of grid", parameter.where)]
    return []


def _has_validation(spec) -> bool:
    return bool(spec.data and spec.data.validation is not None) or spec.fit.validation_split > 0


def _epochs(parameters: list[Parameter]) -> list[int]:
    for parameter in parameters:
        if parameter.path == "fit.epochs":
            return [v for v, _ in parameter.candidates() if isinstance(v, int)]
    return []


def sweep_file_problems(path: str | Path) -> list[KerspecError] | None:
    """The problems of a sweep file, checked as `kerspec sweep` checks it; None when `path` is
    not a sweep file (or cannot be read: the spec check then says why)."""
    path = Path(path)
    try:
        data, source = parse_yaml(read_spec_text(path, str(path)), str(path))
    except KerspecError:
        return None
    if not is_sweep(data):
        return None
    try:
        check_sweep(data, source, path)
    except Problems as err:
        return list(err.problems)
    except KerspecError as err:
        return [err]
    return []
