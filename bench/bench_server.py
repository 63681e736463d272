"""Our HTTP server (python -m nld_cpp.server) against llama-cpp-python's
OpenAI server on the same GGUF and thread count, and against our own Python
API, in one run: streaming POST /v1/completions, greedy AR.

    python bench/bench_server.py [--dir /tmp/nld-3b] [--threads 2] [--runs 4]
                                 [--clients 1 2 4] [--max-tokens 64] [--slot-ctx 512]
    python bench/bench_server.py --smoke    # tiny model only, 1 run, 1 and 2 clients, under a minute

Setup (not CI): `CMAKE_ARGS="-DGGML_NATIVE=ON" pip install "llama-cpp-python[server]"`.
Models: the embedded tiny model and the random-weight 3B-shaped Q4_0 GGUF of
bench/bench_vs_llama_cpp.py (generated into --dir when missing). The method
(servers, requests, pairing, what each figure is) is in docs/server.md,
"Benchmark". Prints markdown tables and writes bench/results/bench_server.md
and .json (--smoke: into /tmp/nld-bench-server-smoke).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import bench_vs_llama_cpp  # noqa: E402  (ensure_files, machine_info, summary, fmt, its model folder)
from nld_cpp.testing.server import free_port, stop, wait_healthy  # noqa: E402
from timed_clients import wave  # noqa: E402  (streamed requests sent together, timed client side)

RESULTS_DIR = ROOT / "bench" / "results"
RESULTS_NAME = "bench_server"
SMOKE_DIR = Path("/tmp/nld-bench-server-smoke")
OURS, PEER = "nld_cpp server", "llama-cpp-python server"
OTHER_MODES = ("diffusion", "spec", "spec-quadratic")
START_TIMEOUT_S = 180.0
# Tokens llama.cpp ends a generation on besides EOS (end-of-generation
# texts); those in a vocabulary get the logit bias on the llama-cpp-python side.
EOG_TEXTS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "</s>", "<end_of_turn>", "<|end_of_text|>",
             "<EOT>")
NO_TOKEN = -1e9

DEFAULTS = {"runs": 4, "tiny_runs": 20, "clients": [1, 2, 4]}
SMOKE_DEFAULTS = {"runs": 1, "tiny_runs": 1, "clients": [1, 2]}


# -- servers -----------------------------------------------------------------
class Server:
    """A running server subprocess: its URL, its process and its log."""

    def __init__(self, name: str, proc: subprocess.Popen, url: str, log: Path):
        self.name, self.proc, self.url, self.log = name, proc, url, log

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.is_file() else ""

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process so far, all its threads (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_busy_s() -> float:
    """CPU seconds the whole machine has been busy (/proc/stat: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def load_meter(servers: List[Server], out: Dict[str, Any]) -> Iterator[None]:
    """Into out: each server's CPU seconds during the block, and the share of
    the machine's CPU that other processes (other tenants, not the servers or
    this process) took meanwhile: the noise a figure was measured under."""
    t0, busy0, own0 = time.perf_counter(), host_busy_s(), sum(os.times()[:2])
    cpu0 = [s.cpu_s() for s in servers]
    yield
    wall, busy, own = time.perf_counter() - t0, host_busy_s() - busy0, sum(os.times()[:2]) - own0
    out["server_cpu_s"] = {s.name: s.cpu_s() - c for s, c in zip(servers, cpu0)}
    others = busy - own - sum(out["server_cpu_s"].values())
    out["others_cpu_share"] = max(0.0, others) / (wall * (os.cpu_count() or 1))


def wait_ready(server: Server, path: str) -> None:
    try:
        wait_healthy(server.url, server.proc, START_TIMEOUT_S, path)
    except RuntimeError as exc:
        raise RuntimeError(f"{server.name}: {exc}; log:\n{server.log_tail()}") from None


@contextlib.contextmanager
def served(name: str, args: List[str], ready_path: str, log_dir: Path) -> Iterator[Server]:
    """`python ARGS --port P` (P free), ready on ready_path, always stopped on exit."""
    port = free_port()
    log = log_dir / f"{name.split()[0]}-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NLD_ARG_")}  # the flags decide
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, *args, "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    server = Server(name, proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server, ready_path)
        yield server
    finally:
        stop(proc)


def ours_args(path: Path, clients: int, threads: int, slot_ctx: int) -> List[str]:
    return ["-m", "nld_cpp.server", "-m", str(path), "-np", str(clients), "-t", str(threads),
            "-c", str(slot_ctx * clients)]


def peer_args(path: Path, threads: int, slot_ctx: int) -> List[str]:
    return ["-m", "llama_cpp.server", "--model", str(path), "--n_ctx", str(slot_ctx), "--n_threads", str(threads),
            "--n_threads_batch", str(threads), "--interrupt_requests", "false", "--host", "127.0.0.1"]


# -- requests ----------------------------------------------------------------
def end_token_ids(path: Path) -> List[int]:
    """EOS ids from the GGUF metadata and the ids of EOG_TEXTS in its vocabulary."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    ids = set()
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "nld.eos_token_ids"):
        value = field(key)
        ids.update(value if isinstance(value, list) else [] if value is None else [value])
    tokens = field("tokenizer.ggml.tokens") or []
    ids.update(i for i, t in enumerate(tokens) if t in EOG_TEXTS)
    return sorted(int(i) for i in ids)


def ours_body(prompt: str, max_tokens: int, mode: str = "ar") -> Dict[str, Any]:
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True, "mode": mode,
            "ignore_eos": True, "stream_options": {"include_usage": True}}


def peer_body(prompt: str, max_tokens: int, end_ids: List[int]) -> Dict[str, Any]:
    # No min_tokens: with it, llama-cpp-python 0.3.36 drops every logits
    # processor (it keeps the None that list.extend returns), the bias too.
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "logit_bias": {str(i): NO_TOKEN for i in end_ids}}


def tokenization_check(peer_url: str, model: Any, prompts: List[str]) -> Dict[str, Any]:
    """Whether llama-cpp-python (its /extras/tokenize, the tokenization its
    completions use) and our tokenizer make the same prompt tokens."""
    lengths, same = [], 0
    for prompt in prompts:
        req = urllib.request.Request(peer_url + "/extras/tokenize", data=json.dumps({"input": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            theirs = json.loads(resp.read())["tokens"]
        ours = model.tokenize(prompt)
        same += int(list(ours) == list(theirs))
        lengths.append(len(ours))
    return {"prompts": len(prompts), "identical": same, "prompt_tokens": summary([float(n) for n in lengths])}


def python_api_call(model: Any, prompt: str, max_tokens: int) -> Dict[str, Any]:
    t0 = time.perf_counter()
    done = model.create_completion(prompt, max_tokens=max_tokens, temperature=0, mode="ar", ignore_eos=True)
    wall = time.perf_counter() - t0
    tokens = done["usage"]["completion_tokens"]
    return {"wall_s": wall, "tokens": tokens, "tok_s": tokens / wall, "nld_tokens_per_s": done["nld"]["tokens_per_s"],
            "prompt_tokens": done["usage"]["prompt_tokens"]}


# -- one model -----------------------------------------------------------------
def prompts_for(n: int) -> List[str]:
    from nld_cpp.models import held_out, render_prompt

    items = [it for it in held_out() if len(it["turns"]) == 1]
    return [render_prompt(items[i % len(items)]["turns"][0]["user"]) for i in range(n)]


def measure_model(path: Path, runs: int, args: argparse.Namespace, log_dir: Path, with_modes: bool) -> Dict[str, Any]:
    import nld_cpp

    end_ids = end_token_ids(path)
    n_prompts = 1 + runs * (sum(args.clients) + (len(OTHER_MODES) if with_modes else 0))
    prompts = iter(prompts_for(n_prompts))
    warm = next(prompts)
    errors: List[Dict[str, Any]] = []
    by_clients: Dict[str, Any] = {}
    overhead: Dict[str, List[Dict[str, Any]]] = {"http": [], "python": []}
    modes: Dict[str, List[Dict[str, Any]]] = {m: [] for m in OTHER_MODES}
    used: List[str] = []
    pymodel = nld_cpp.Model(path, n_ctx=args.slot_ctx, n_threads=args.threads)
    try:
        python_api_call(pymodel, warm, 8)
        with served(PEER, peer_args(path, args.threads, args.slot_ctx), "/v1/models", log_dir) as peer:
            warm_peer = wave(peer.url, [peer_body(warm, 8, end_ids)], 8)
            errors += [{**e, "server": PEER, "what": "warm-up"} for e in warm_peer["errors"]]
            for clients in args.clients:
                print(f"  {clients} client(s) ...", flush=True)
                waves: Dict[str, List[Dict[str, Any]]] = {OURS: [], PEER: []}
                with served(OURS, ours_args(path, clients, args.threads, args.slot_ctx), "/health", log_dir) as ours:
                    warm_ours = wave(ours.url, [ours_body(warm, 8)] * clients, 8)
                    errors += [{**e, "server": OURS, "what": "warm-up"} for e in warm_ours["errors"]]
                    servers = {OURS: ours, PEER: peer}
                    for run in range(runs):
                        batch = [next(prompts) for _ in range(clients)]
                        used.extend(batch)

                        def run_wave(name: str) -> None:
                            bodies = ([ours_body(p, args.max_tokens) for p in batch] if name == OURS
                                      else [peer_body(p, args.max_tokens, end_ids) for p in batch])
                            load: Dict[str, Any] = {}
                            with load_meter([ours, peer], load):
                                w = wave(servers[name].url, bodies, args.max_tokens)
                            w["load"] = load
                            w["idle_cpu_s"] = load["server_cpu_s"][PEER if name == OURS else OURS]
                            waves[name].append(w)
                            errors.extend({**e, "server": name, "clients": clients, "run": run,
                                           "server_log_tail": servers[name].log_tail()} for e in w["errors"])

                        def run_python() -> None:
                            load: Dict[str, Any] = {}
                            with load_meter([ours, peer], load):
                                call = python_api_call(pymodel, batch[0], args.max_tokens)
                            overhead["python"].append({**call, "load": load})

                        # Ours in the middle: next to the peer and, at 1 client, to the Python API.
                        order: List[Callable[[], None]] = [lambda: run_wave(PEER), lambda: run_wave(OURS)]
                        if clients == 1:
                            order.append(run_python)
                        for step in (order if run % 2 == 0 else order[::-1]):
                            time.sleep(args.gap)
                            step()
                        if clients == 1:
                            overhead["http"].append(waves[OURS][-1])
                    if clients == 1 and with_modes:
                        for mode in OTHER_MODES:
                            for run in range(runs):
                                time.sleep(args.gap)
                                mode_load: Dict[str, Any] = {}
                                with load_meter([ours, peer], mode_load):
                                    w = wave(ours.url, [ours_body(next(prompts), args.max_tokens, mode)],
                                             args.max_tokens)
                                modes[mode].append({**w, "load": mode_load})
                                errors.extend({**e, "server": OURS, "mode": mode, "run": run,
                                               "server_log_tail": ours.log_tail()} for e in w["errors"])
                by_clients[str(clients)] = waves
            tokenization = tokenization_check(peer.url, pymodel, used)
    finally:
        pymodel.close()
    return {"file": str(path), "end_token_ids": end_ids, "tokenization": tokenization, "waves": by_clients,
            "overhead": overhead, "modes": modes if with_modes else {}, "errors": errors}


# -- summaries -----------------------------------------------------------------
summary = bench_vs_llama_cpp.summary


def ok(waves: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [w for w in waves if not w["errors"]]


def side_summary(waves: List[Dict[str, Any]]) -> Dict[str, Any]:
    requests = [r for w in ok(waves) for r in w["requests"]]
    if not requests:
        return {}
    return {"ttft_s": summary([r["ttft_s"] for r in requests]), "request_tok_s": summary([r["tok_s"] for r in requests]),
            "aggregate_tok_s": summary([w["aggregate_tok_s"] for w in ok(waves)]),
            "tokens": summary([float(r["tokens"]) for r in requests]),
            "counted": sorted({r["counted"] for r in requests}),
            "finish_reasons": sorted({str(r["finish_reason"]) for r in requests}),
            "idle_cpu_s_of_other": summary([w["idle_cpu_s"] for w in waves]),
            "others_cpu_share": summary([w["load"]["others_cpu_share"] for w in waves])}


def paired(ours: List[Dict[str, Any]], peer: List[Dict[str, Any]]) -> Dict[str, Any]:
    pairs = [(a, b) for a, b in zip(ours, peer) if not a["errors"] and not b["errors"]]
    if not pairs:
        return {}

    def med(w: Dict[str, Any], key: str) -> float:
        return statistics.median(r[key] for r in w["requests"])

    return {"ttft": summary([med(a, "ttft_s") / med(b, "ttft_s") for a, b in pairs]),
            "request_tok_s": summary([med(a, "tok_s") / med(b, "tok_s") for a, b in pairs]),
            "aggregate_tok_s": summary([a["aggregate_tok_s"] / b["aggregate_tok_s"] for a, b in pairs])}


def summarize(m: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"tokenization": m["tokenization"], "clients": {}}
    for clients, waves in m["waves"].items():
        out["clients"][clients] = {OURS: side_summary(waves[OURS]), PEER: side_summary(waves[PEER]),
                                   "ours / peer": paired(waves[OURS], waves[PEER])}
    pairs = [(w, p) for w, p in zip(m["overhead"]["http"], m["overhead"]["python"]) if not w["errors"]]
    if pairs:
        http = [w["requests"][0] for w, _ in pairs]
        out["overhead"] = {"http_tok_s": summary([r["tok_s"] for r in http]),
                           "python_tok_s": summary([p["tok_s"] for _, p in pairs]),
                           "http_over_python": summary([r["tok_s"] / p["tok_s"] for r, (_, p) in zip(http, pairs)]),
                           "http_tokens": sorted({r["tokens"] for r in http}),
                           "python_tokens": sorted({p["tokens"] for _, p in pairs}),
                           "server_side_tok_s": summary([r["nld"]["tokens_per_s"] for r in http if r.get("nld")] or [0.0]),
                           "python_nld_tok_s": summary([p["nld_tokens_per_s"] for _, p in pairs])}
        out["overhead"]["target_met"] = out["overhead"]["http_over_python"]["median"] >= 0.95
    out["modes"] = {}
    for mode, waves in m["modes"].items():
        requests = [w["requests"][0] for w in ok(waves)]
        if requests:
            out["modes"][mode] = {"tok_s": summary([r["tok_s"] for r in requests]),
                                  "ttft_s": summary([r["ttft_s"] for r in requests]),
                                  "tokens": summary([float(r["tokens"]) for r in requests]),
                                  "tokens_per_forward": summary([r["nld"]["tokens_per_forward"] for r in requests
                                                                 if r.get("nld")] or [0.0])}
    return out


fmt = bench_vs_llama_cpp.fmt


def tables(summaries: Dict[str, Dict[str, Any]], args: argparse.Namespace) -> str:
    runs = f"{args.tiny_runs} run(s)" if args.smoke else f"{args.tiny_runs} (tiny) and {args.runs} (3B) runs"
    lines = [f"median (min-max) over {runs}; {args.max_tokens} tokens per request, greedy, streamed "
             f"/v1/completions; {args.threads} threads; {args.slot_ctx}-token context per slot; ours with "
             "-np = clients; others' CPU: the share of the machine's CPU that other processes took during "
             "the waves, median (max)", "",
             "| model | clients | server | TTFT s | request tok/s | aggregate tok/s | tokens/request | others' CPU |",
             "|---|---|---|---|---|---|---|---|"]
    for model, s in summaries.items():
        for clients, by in s["clients"].items():
            for name in (OURS, PEER):
                r = by[name]
                if not r:
                    lines.append(f"| {model} | {clients} | {name} | failed | | | | |")
                    continue
                lines.append(f"| {model} | {clients} | {name} | {fmt(r['ttft_s'], 3)} | {fmt(r['request_tok_s'], 1)} | "
                             f"{fmt(r['aggregate_tok_s'], 1)} | {fmt(r['tokens'], 0)} | "
                             f"{100 * r['others_cpu_share']['median']:.0f}% ({100 * r['others_cpu_share']['max']:.0f}%) |")
            p = by["ours / peer"]
            if p:
                lines.append(f"| {model} | {clients} | ours / llama-cpp-python, pair by pair | {fmt(p['ttft'])}x | "
                             f"{fmt(p['request_tok_s'])}x | {fmt(p['aggregate_tok_s'])}x | | |")
    lines += ["", "overhead: our server (1 client, HTTP) against our Python API (create_completion), same prompts, "
              "run next to each other; target HTTP / Python >= 0.95", "",
              "| model | HTTP tok/s | Python API tok/s | HTTP / Python, pair by pair | target met |",
              "|---|---|---|---|---|"]
    for model, s in summaries.items():
        o = s.get("overhead")
        if o:
            lines.append(f"| {model} | {fmt(o['http_tok_s'], 1)} | {fmt(o['python_tok_s'], 1)} | "
                         f"{fmt(o['http_over_python'], 3)} | {'yes' if o['target_met'] else 'no'} |")
    mode_rows = [(model, mode, r) for model, s in summaries.items() for mode, r in s["modes"].items()]
    if mode_rows:
        lines += ["", "our other modes over HTTP, 1 client (information)", "",
                  "| model | mode | tok/s | tokens per forward | TTFT s | tokens/request |", "|---|---|---|---|---|---|"]
        for model, mode, r in mode_rows:
            lines.append(f"| {model} | {mode} | {fmt(r['tok_s'], 1)} | {fmt(r['tokens_per_forward'])} | "
                         f"{fmt(r['ttft_s'], 3)} | {fmt(r['tokens'], 0)} |")
    return "\n".join(lines) + "\n"


def strip_times(m: Dict[str, Any]) -> Dict[str, Any]:
    """The raw figures without the perf_counter stamps (meaningless outside this run)."""
    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k not in ("start", "end")}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x
    return clean(m)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--smoke", action="store_true", help="tiny model only, 1 run, 1 and 2 clients")
    ap.add_argument("--dir", default=bench_vs_llama_cpp.DEFAULTS["dir"], help="folder of the 3B-shaped GGUF")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, help="runs on the 3B-shaped model")
    ap.add_argument("--tiny-runs", type=int, help="runs on the tiny model (milliseconds a request: more runs)")
    ap.add_argument("--clients", type=int, nargs="+")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--slot-ctx", type=int, default=512, help="context per slot (the tiny model's is 512)")
    ap.add_argument("--gap", type=float, default=0.1, help="seconds of pause before each timed wave")
    args = ap.parse_args(argv)
    for key, value in (SMOKE_DEFAULTS if args.smoke else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        import llama_cpp
    except ImportError:
        sys.exit("llama_cpp is not importable: install llama-cpp-python[server] first (see this file's docstring)")
    import nld_cpp
    from nld_cpp.models import default_model_path

    t_start = time.monotonic()
    files = {"tiny (Q8_0)": default_model_path()}
    if not args.smoke:
        files["3B-shaped random (Q4_0)"] = bench_vs_llama_cpp.ensure_files(Path(args.dir), ["q4_0"])["q4_0"]
    out_dir = SMOKE_DIR if args.smoke else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    raw: Dict[str, Any] = {}
    log_dir = tempfile.mkdtemp(prefix="nld-bench-server-logs-")  # kept: the servers' logs
    print(f"server logs in {log_dir}", flush=True)
    for model, path in files.items():
        print(f"{model}: {path}", flush=True)
        tiny = model.startswith("tiny")
        raw[model] = measure_model(path, args.tiny_runs if tiny else args.runs, args, Path(log_dir), with_modes=tiny)
    summaries = {model: summarize(m) for model, m in raw.items()}
    errors = [{**e, "model": model} for model, m in raw.items() for e in m["errors"]]
    for e in errors:
        e.pop("start", None)

    machine = bench_vs_llama_cpp.machine_info()
    markdown = tables(summaries, args)
    print("\n" + markdown)
    if errors:
        print(f"{len(errors)} failed request(s), first: {json.dumps(errors[0])[:2000]}")
    name = f"{RESULTS_NAME}.smoke" if args.smoke else RESULTS_NAME
    flags = ", ".join(f for f, on in machine["flags"].items() if on) or "no avx2"
    header = (f"# bench_server\n\n{machine['cpu_model']} ({flags}), {machine['cpus']} CPUs; nld_cpp "
              f"{nld_cpp.__version__}, llama-cpp-python {llama_cpp.__version__}; "
              f"{datetime.date.today().isoformat()}\n\n")
    (out_dir / f"{name}.md").write_text(header + markdown + (f"\n{len(errors)} failed request(s): see the JSON\n"
                                                             if errors else ""))
    (out_dir / f"{name}.json").write_text(json.dumps({
        "benchmark": RESULTS_NAME, "smoke": args.smoke,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "versions": {"nld_cpp": nld_cpp.__version__, "llama_cpp_python": llama_cpp.__version__},
        "settings": {"threads": args.threads, "runs": args.runs, "tiny_runs": args.tiny_runs, "clients": args.clients,
                     "max_tokens": args.max_tokens, "slot_ctx": args.slot_ctx, "gap_s": args.gap},
        "files": {model: str(p) for model, p in files.items()}, "server_logs": log_dir, "wall_s": time.monotonic() - t_start,
        "summary": summaries, "errors": errors, "raw": {model: strip_times(m) for model, m in raw.items()}},
        indent=1) + "\n")
    print(f"wrote {out_dir / (name + '.json')} and {out_dir / (name + '.md')} ({time.monotonic() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
