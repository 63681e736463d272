"""The counters behind GET /metrics, in Prometheus' text format:
llama-server's names (prefix `llamacpp:`) and ours (prefix `nld:`, labelled
by mode): forward passes, draft tokens proposed and accepted, requests and
tokens; and the continuous-batching scheduler's counters."""

from __future__ import annotations

import collections
import threading
from typing import Any, Dict, List, Optional, Tuple

from ..generation import MODES


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.prompt_tokens = 0
        self.prompt_seconds = 0.0
        self.predicted_tokens = 0
        self.predicted_seconds = 0.0
        self.requests_refused = 0
        self.per_mode: Dict[str, collections.Counter] = {m: collections.Counter() for m in (*MODES, "infill")}

    def record(self, mode: str, stats: Dict[str, Any], prompt_evaluated: int) -> None:
        """One finished generation (stats: the Python API's `nld` dict with usage)."""
        ttft = stats.get("time_to_first_token_s") or 0.0
        with self._lock:
            self.prompt_tokens += prompt_evaluated
            self.prompt_seconds += ttft
            self.predicted_tokens += stats["usage"]["completion_tokens"]
            self.predicted_seconds += max(0.0, stats["total_s"] - ttft)
            c = self.per_mode[mode]
            c["requests"] += 1
            c["tokens"] += stats["usage"]["completion_tokens"]
            c["forwards"] += stats["forwards"]
            c["draft_tokens"] += stats.get("draft_tokens", 0)
            c["draft_accepted"] += sum(stats["accepted_lengths"])

    def refused(self) -> None:
        with self._lock:
            self.requests_refused += 1

    def text(self, busy: int, waiting: int, n_ctx: int, batching: Optional[Dict[str, int]] = None) -> str:
        """batching: the scheduler's counters (None without continuous batching)."""
        with self._lock:
            rows: List[Tuple[str, str, str, Any]] = [
                ("llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.", self.prompt_tokens),
                ("llamacpp:prompt_seconds_total", "counter", "Prompt process time.", self.prompt_seconds),
                ("llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed.",
                 self.predicted_tokens),
                ("llamacpp:tokens_predicted_seconds_total", "counter", "Predict process time.",
                 self.predicted_seconds),
                ("llamacpp:n_decode_total", "counter", "Total number of forward passes.",
                 sum(c["forwards"] for c in self.per_mode.values())),
                ("llamacpp:prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.",
                 self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0),
                ("llamacpp:predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.",
                 self.predicted_tokens / self.predicted_seconds if self.predicted_seconds else 0.0),
                ("llamacpp:requests_processing", "gauge", "Number of requests processing.", busy),
                ("llamacpp:requests_deferred", "gauge", "Number of requests deferred.", waiting),
                ("llamacpp:n_tokens_max", "counter", "Context size of one slot.", n_ctx),
                ("nld:requests_refused_total", "counter", "Requests refused because the queue was full.",
                 self.requests_refused),
            ]
            if batching is not None:
                steps = batching["n_steps"]
                rows += [
                    ("llamacpp:n_busy_slots_per_decode", "gauge", "Average number of slots in one batched forward.",
                     batching["n_sequence_forwards"] / steps if steps else 0.0),
                    ("nld:batched_steps_total", "counter", "Batched forwards run by the scheduler.", steps),
                    ("nld:batched_forwards_shared_total", "counter", "Batched forwards that held two or more slots.",
                     batching["n_batched_forwards"]),
                    ("nld:batch_rows_total", "counter", "Rows over all batched forwards.", batching["n_rows"]),
                    ("nld:batch_prefill_rows_total", "counter", "Prompt rows over all batched forwards.",
                     batching["n_prefill_rows"]),
                    ("nld:batch_max_slots", "gauge", "The most slots one batched forward held.",
                     batching["max_sequences"]),
                    ("nld:batch_scratch_bytes", "gauge",
                     "Activations held for batched forwards (grown to the largest batch so far).",
                     batching["scratch_bytes"]),
                ]
            per_mode = [
                ("nld:requests_total", "Finished generations, by mode.", "requests"),
                ("nld:tokens_predicted_total", "Generated tokens, by mode.", "tokens"),
                ("nld:forwards_total", "Forward passes, by mode.", "forwards"),
                ("nld:draft_tokens_total", "Draft tokens proposed by self-speculation, by mode.", "draft_tokens"),
                ("nld:draft_tokens_accepted_total", "Draft tokens accepted by verification, by mode.",
                 "draft_accepted"),
            ]
            lines = []
            for name, kind, help_, value in rows:
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
            for name, help_, key in per_mode:
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
                lines += [f'{name}{{mode="{m}"}} {c[key]}' for m, c in self.per_mode.items()]
        return "\n".join(lines) + "\n"
