"""Starting and stopping `nld-server` from tests and benchmarks: a subprocess on a free
127.0.0.1 port, polled on /health a bounded number of times, always stopped
(terminate, then kill) when the block ends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A running server: its base URL, its process and its log file."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def request(self, method: str, path: str, body: Any = None, headers: Optional[Dict[str, str]] = None,
                raw: Optional[bytes] = None, timeout: float = 60.0) -> Tuple[int, Dict[str, str], bytes]:
        """One HTTP request; returns (status, headers, body bytes) for every status."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Tuple[int, Any]:
        status, _, data = self.request(method, path, body, **kw)
        return status, json.loads(data) if data else None


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = START_TIMEOUT_S, path: str = "/health") -> None:
    """Until GET url+path answers 200 (RuntimeError if the process exits or the time is up)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(url + path, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the server was not healthy within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def running_server(args: List[str] = (), log_dir: Optional[Path] = None, env: Optional[Dict[str, str]] = None,
                   wait: bool = True) -> Iterator[ServerProcess]:
    """`python -m nld_cpp.server --port P *args`, healthy, stopped on exit."""
    port = free_port()
    log_dir = Path(log_dir or os.environ.get("TMPDIR", "/tmp"))
    log = log_dir / f"nld-server-{port}.log"
    full_env = dict(os.environ, **(env or {}))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nld_cpp.server", "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, env=full_env)
    server = ServerProcess(proc, port, log)
    try:
        if wait:
            try:
                wait_healthy(server.url, proc)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; log:\n{server.log_text()}") from None
        yield server
    finally:
        stop(proc)


def sse_events(body: bytes) -> List[str]:
    """The `data:` payloads of an SSE body, in order."""
    events = []
    for block in body.decode("utf-8").split("\n\n"):
        lines = [ln[len("data:"):].strip() for ln in block.splitlines() if ln.startswith("data:")]
        if lines:
            events.append("\n".join(lines))
    return events
