"""Checks an installed nld_cpp from the install alone (run by
tests/test_wheel.py in a fresh virtual environment, and by cibuildwheel's
test-command): the package is not imported from a source tree, the demo,
`nld info` and `python -m nld_cpp.convert --help` run, and a short greedy
generation runs in every mode on every CPU path this machine has (default,
avx2 where the CPU has it, scalar), each path's tokens equal to the
default's and every exact mode's equal to AR's.

    python wheel_check.py [--quick] [--forbid SOURCE_TREE]

--quick: the default CPU path only. Prints one JSON line of what it found;
exits non-zero with the reason on the first failure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

MODES = ["ar", "diffusion", "spec", "spec-quadratic", "auto"]
EXACT = ["spec", "spec-quadratic", "auto"]  # equal to AR at temperature 0

GENERATE = """
import json, sys
import nld_cpp
from nld_cpp.models import default_model_path, held_out, render_prompt
from nld_cpp.quants import default_cpu_path
out = {"path": default_cpu_path(), "tokens": {}}
with nld_cpp.Model(str(default_model_path()), n_ctx=256, n_threads=2) as model:
    items = [it for it in held_out() if it["task"] in ("count", "copy", "chat")][:3]
    for i, item in enumerate(items):
        prompt = model.tokenize(render_prompt(item["turns"][0]["user"], (), item["system"]))
        for mode in sys.argv[1].split(","):
            model.truncate(0)
            res = model.generate(prompt, mode=mode, max_tokens=24, temperature=0.0)
            out["tokens"][f"{i}:{mode}"] = res.tokens
print(json.dumps(out))
"""


def fail(message: str) -> None:
    print(f"wheel check FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def run(args: list[str], env: dict | None = None) -> str:
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:
        fail(f"{' '.join(args[:4])} ... exited {res.returncode}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res.stdout


def script(name: str) -> str:
    """A console script of this environment (bin/ or Scripts/)."""
    path = Path(sysconfig.get_path("scripts")) / (name + (".exe" if os.name == "nt" else ""))
    if not path.is_file():
        fail(f"console script {name} is not installed at {path}")
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--forbid", type=Path, help="a source tree the package must not come from")
    args = ap.parse_args()

    import nld_cpp
    from nld_cpp.quants import cpu_path_supported

    where = Path(nld_cpp.__file__).resolve().parent
    site = Path(sysconfig.get_path("purelib")).resolve()
    if site not in where.parents:
        fail(f"nld_cpp is imported from {where}, not from this environment's {site}")
    if args.forbid and args.forbid.resolve() in [where, *where.parents]:
        fail(f"nld_cpp is imported from the source tree {args.forbid}")
    report: dict = {"package": str(where), "version": nld_cpp.__version__}

    demo = run([sys.executable, "-m", "nld_cpp.demo", "--max-tokens", "16"])
    if "all prompts" not in demo or "auto" not in demo:
        fail(f"the demo's output lacks its summary:\n{demo[-1000:]}")
    info = run([script("nld"), "info"])
    if "nld-tiny" not in info or "spec-quadratic" not in info:
        fail(f"nld info does not describe the embedded model:\n{info}")
    usage = run([sys.executable, "-m", "nld_cpp.convert", "--help"])
    if "usage" not in usage.lower():
        fail(f"python -m nld_cpp.convert --help printed no usage:\n{usage}")

    paths = ["default"] if args.quick else ["default"] + [p for p in ("avx2", "scalar") if cpu_path_supported(p)]
    results = {}
    for path in paths:
        env = dict(os.environ)
        env.pop("NLD_CPU_PATH", None)
        if path != "default":
            env["NLD_CPU_PATH"] = path
        results[path] = json.loads(run([sys.executable, "-c", GENERATE, ",".join(MODES)], env=env).splitlines()[-1])
        if path != "default" and results[path]["path"] != path:
            fail(f"NLD_CPU_PATH={path} ran the {results[path]['path']} path")
    base = results["default"]["tokens"]
    for key, tokens in base.items():
        i, mode = key.split(":")
        if not tokens:
            fail(f"prompt {i} in mode {mode} generated nothing")
        if mode in EXACT and tokens != base[f"{i}:ar"]:
            fail(f"prompt {i}: mode {mode} differs from AR at temperature 0")
    for path, res in results.items():
        if res["tokens"] != base:
            bad = [k for k in base if res["tokens"][k] != base[k]]
            fail(f"the {path} CPU path's greedy tokens differ from the default ({results['default']['path']}) path's "
                 f"at {bad}")
    report["cpu_paths"] = {p: r["path"] for p, r in results.items()}
    report["generations"] = len(base) * len(results)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
