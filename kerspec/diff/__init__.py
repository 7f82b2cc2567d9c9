"""What changed in the model between two specs: `kerspec diff OLD NEW`.

Both specs are loaded and compiled as `kerspec summary` does, so the comparison is of what the
model is, not of the text: defaults are resolved (`units: 8` written out equals the default left
out), parameter counts, output shapes and weight shapes come from the compiled graphs. The result
is data first (`SpecDiff`, also the `--json` form); `render_text` and `render_markdown` print it.

A spec is a file path, or `REV:path` read from git (`HEAD~1:specs/model.yaml`), as `git show`
names a file in a revision.
"""

from kerspec.diff.compare import compare, diff_specs
from kerspec.diff.render import render_markdown, render_text
from kerspec.diff.result import SpecDiff

__all__ = ["SpecDiff", "compare", "diff_specs", "render_markdown", "render_text"]
