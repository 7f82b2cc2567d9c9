"""How the command line reads numbers, shows its usage and loads what its commands need.

`'2.5' is not a valid integer` names the value given (Typer's own message does not); usage lines
show `SPEC`, as man pages do, and flags show no `<bool>` type.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType

import typer
from typer.core import TyperCommand, TyperGroup


def lazy_module(name: str) -> ModuleType:
    """`name`, imported when one of its attributes is first read (the standard LazyLoader)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """A parser for an integer option, at least `minimum` and at most `maximum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{text!r} is not a valid integer") from None
        if minimum is not None and value < minimum:
            raise typer.BadParameter(f"{text!r} is less than {minimum}") from None
        if maximum is not None and value > maximum:
            raise typer.BadParameter(f"{text!r} is more than {maximum}") from None
        return value

    return parse


def _untyped_flags(params: list) -> list:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Group(TyperGroup):
    """The top level: its flags (--version, --help) show no type either."""

    def get_params(self, ctx):
        return _untyped_flags(super().get_params(ctx))


class Command(TyperCommand):
    """A command whose usage names its arguments by their metavar and whose flags show no type."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if getattr(param, "param_type_name", "") != "argument":
                continue
            name = param.metavar or (param.name or "").upper()
            if param.nargs != 1 and not name.endswith("..."):
                name += "..."
            pieces.append(name if param.required else f"[{name}]")
        return pieces

    def get_params(self, ctx):
        return _untyped_flags(super().get_params(ctx))


def plain_commands(app: typer.Typer) -> None:
    """Give every command of `app` the Command class above."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = Command
