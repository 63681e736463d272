"""The size budgets of STYLE.md: no C++ file over 1,500 lines, no Python
module over 500 (tests and the fixture corpus included)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = {".cpp": 1500, ".h": 1500, ".cu": 1500, ".py": 500}
SOURCE_DIRS = ["csrc", "quants", "convert", "python", "tests", "bench"]


def test_files_stay_within_budget():
    over = []
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*"):
            limit = BUDGETS.get(path.suffix)
            if limit and "build" not in path.parts:
                n = len(path.read_text(errors="replace").splitlines())
                if n > limit:
                    over.append(f"{path.relative_to(ROOT)}: {n} lines (budget {limit})")
    assert not over, "\n".join(over)
