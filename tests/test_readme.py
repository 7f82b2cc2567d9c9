"""Every `sh` block of README.md runs as written, so README cannot drift from kerspec.

The blocks run in order, each in its own shell, from the root of a temporary copy of the
repository (what the session writes, `runs/` and predictions, stays in the copy). A comment on
the line right before a fence changes that:

- `<!-- needs: MODULE[, MODULE] -->`: the block is skipped when a module cannot be imported.
- `<!-- setup -->`: an install-and-go block (pip installs, the test suite itself), never run here.

`kerspec` and `python` in a block are this interpreter running the copy's code, as
`pip install -e .` would make them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\s*$")
MARK = re.compile(r"^<!--\s*(needs:\s*(?P<needs>[\w., ]+?)|(?P<setup>setup))\s*-->\s*$")
# What a checkout holds besides the repository's files: never copied.
_NOT_COPIED = shutil.ignore_patterns(
    ".git",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".hypothesis",
    ".benchmarks",
    ".venv",
)


def not_copied(folder: str, names: list[str]) -> set[str]:
    # Only the top folder's runs/ is a checkout's run output; kerspec/runs/ is source.
    top = {"runs"} & set(names) if Path(folder) == ROOT else set()
    return set(_NOT_COPIED(folder, names)) | top


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    code: str
    needs: list[str]
    setup: bool


def sh_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"README.md:{i + 1}: a fence that is never closed"
        if match.group(1) == "sh":
            mark = MARK.match(lines[i - 1].strip()) if i > 0 else None
            needs = (
                re.split(r"[,\s]+", mark.group("needs").strip())
                if mark and mark.group("needs")
                else []
            )
            blocks.append(
                Block(
                    i + 1,
                    "\n".join(lines[i + 1 : end]) + "\n",
                    needs,
                    bool(mark and mark.group("setup")),
                )
            )
        i = end + 1
    return blocks


def test_readme_marks_are_read():
    blocks = sh_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len([b for b in blocks if b.setup]) >= 2  # pip install -e ., the test command
    assert len([b for b in blocks if not b.setup]) >= 2  # the session, resuming


def test_readme_blocks_run_as_written(tmp_path):
    blocks = [b for b in sh_blocks((ROOT / "README.md").read_text(encoding="utf-8")) if not b.setup]
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=not_copied)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, command in (
        ("kerspec", f'"{sys.executable}" -m kerspec'),
        ("python", f'"{sys.executable}"'),
    ):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(repo),
        "COLUMNS": "80",
    }
    for block in blocks:
        if any(importlib.util.find_spec(module) is None for module in block.needs):
            continue
        result = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", block.code],
            check=False,
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, (
            f"README.md:{block.line}: the block exits {result.returncode}\n{block.code}\n"
            f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
        )
        assert "Traceback" not in result.stderr, f"README.md:{block.line}:\n{result.stderr[-3000:]}"
