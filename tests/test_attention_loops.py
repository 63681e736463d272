"""The SIMD attention loops and the vector exp against plain loops written from their contracts.

tests/cpp/attention_check.cpp is built with AddressSanitizer and UndefinedBehaviorSanitizer and
run: f32, f16 and q8_0 keys and values as kv_cache stores them (read back as its round trip
says), key ranges that start and end inside a key tile, runs of whole tiles, head sizes with and
without tails, 1 to 5 heads per call, for every loop table this CPU runs (bit for bit), and the
vector exp against the scalar one (bit for bit) and against double-precision e^x (2 ulp). The
end-to-end check that every CPU path gives the same logits is in test_forward_parity.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nld_cpp import quants as Q
from sanitized import ROOT, run_sanitized


@pytest.mark.unit
def test_attention_loops_match_their_contracts_under_sanitizers(tmp_path: Path) -> None:
    stdout = run_sanitized(tmp_path, "attention_check",
                           [ROOT / "tests/cpp/attention_check.cpp", ROOT / "csrc/backend/cpu/attention_loops.cpp",
                            ROOT / "csrc/kv_cache.cpp", ROOT / "quants/quants.cpp"])
    tables = int(stdout.split("tables")[1].split()[0])
    expected = int(Q.cpu_path_supported("avx2")) + int(Q.cpu_path_supported("avx512_vnni"))
    assert tables >= expected, stdout
