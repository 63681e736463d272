"""The CPU thread pool against its contract (csrc/backend/cpu/threadpool.h).

tests/cpp/threadpool_check.cpp is built with AddressSanitizer and UndefinedBehaviorSanitizer and
run: parallel_for and parallel_chunks pass every index exactly once for 1-4 threads and sizes
around the chunk size, parallel_chunks calls on whole chunks, and a thread held up inside one
chunk takes no other while the free threads clear the rest. That the split never changes a
result is checked end to end in test_quant_models.py (1 and 2 threads give identical logits).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sanitized import ROOT, run_sanitized


@pytest.mark.unit
def test_threadpool_meets_its_contract_under_sanitizers(tmp_path: Path) -> None:
    stdout = run_sanitized(tmp_path, "threadpool_check",
                           [ROOT / "tests/cpp/threadpool_check.cpp", ROOT / "csrc/backend/cpu/threadpool.cpp"])
    assert "cover: 288 cases" in stdout, stdout
    assert stdout.count("the sleeper took 1 of 64 chunks") == 3, stdout
