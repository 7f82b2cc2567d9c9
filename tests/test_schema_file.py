"""kerspec.schema.json, at the repository's root, is what `kerspec schema` prints, and every
example spec's `# yaml-language-server: $schema=` line points at it.

A stale file is rewritten by this test, which then fails: commit the new file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kerspec.spec import json_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "kerspec.schema.json"
EXAMPLES = sorted((ROOT / "specs").rglob("*.yaml"))
LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)


def test_the_schema_file_is_current():
    text = json.dumps(json_schema(), indent=2) + "\n"
    if not SCHEMA.exists() or SCHEMA.read_text(encoding="utf-8") != text:
        SCHEMA.write_text(text, encoding="utf-8")
        pytest.fail(f"{SCHEMA.name} was stale and has been regenerated: commit it")


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_specs_point_at_the_schema_file(spec):
    found = LINE.search(spec.read_text(encoding="utf-8"))
    assert found, f"{spec}: no '# yaml-language-server: $schema=' line"
    assert (spec.parent / found.group(1)).resolve() == SCHEMA
