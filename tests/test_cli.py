"""The `nld` command, driven as a person would: `info`, `run`, one-line
errors, and a chat under a pseudo-terminal (pexpect) with three turns, a
mode switch, Ctrl-C during an answer, and Ctrl-D to leave."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.model

NLD = [sys.executable, "-m", "nld_cpp.cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(NLD + list(args), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def talker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights, 4096 context: answers run long unless stopped."""
    from nld_cpp.convert import convert_checkpoint
    from nld_cpp.testing.checkpoints import make_checkpoint

    ckpt = make_checkpoint(tmp_path_factory.mktemp("cli-talker"), max_position_embeddings=4096,
                           original_max_position_embeddings=4096, vocab_size=6000, seed=5)
    return Path(convert_checkpoint(ckpt, tmp_path_factory.mktemp("cli-gguf") / "talker.gguf", outtype="f16",
                                   progress=False).path)


def test_console_script_installed():
    assert shutil.which("nld"), "the nld console script is on PATH after pip install"


def test_info(talker):
    res = run("info", str(talker))
    assert res.returncode == 0, res.stderr
    for expected in ("architecture           mistral3", "quantization           F16", "diffusion block        32",
                     "drafter LoRA           rank 8", "modes                  ar, diffusion, spec, spec-quadratic",
                     "chat template          yes"):
        assert expected.split()[0] in res.stdout and expected.split()[-1] in res.stdout, (expected, res.stdout)
    default = run("info")
    assert default.returncode == 0 and "nld-tiny" in default.stdout


def test_run_default_model_answers():
    res = run("run", "-p", "Copy: a b c", "--stats")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() and "tokens/forward" in res.stderr


@pytest.mark.parametrize("mode", ["ar", "diffusion", "spec", "spec-quadratic", "auto", "spec --block-length auto"])
def test_run_modes_agree_at_temperature_0(talker, mode):
    """Greedy AR, the two speculation modes and auto print the same answer (docs/generation.md)."""
    res = run("run", "-m", str(talker), "-p", "hi", "-n", "20", "--mode", *mode.split())
    assert res.returncode == 0, res.stderr
    if mode != "diffusion":
        ar = run("run", "-m", str(talker), "-p", "hi", "-n", "20", "--mode", "ar")
        assert res.stdout == ar.stdout


def one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 1
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr and len(err.splitlines()) == 1, res.stderr
    assert err.startswith("nld: error: ")
    for n in needles:
        assert n in err, err


def test_errors_are_one_line(tmp_path, talker):
    one_line_error(run("run", "-m", str(tmp_path / "missing.gguf"), "-p", "x"), "not found", "missing.gguf")
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    one_line_error(run("run", "-m", str(text), "-p", "x"), "not a GGUF file")
    import gguf

    llama = tmp_path / "llama.gguf"  # a valid GGUF of another architecture
    writer = gguf.GGUFWriter(str(llama), arch="llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    one_line_error(run("info", str(llama)), "llama")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(talker.read_bytes()[:5000])
    one_line_error(run("run", "-m", str(truncated), "-p", "x"))


def test_chat_session(talker):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(NLD[0], NLD[1:] + ["chat", "-m", str(talker), "-n", "3000", "-c", "4096"],
                          encoding="utf-8", timeout=60, dimensions=(40, 200))
    try:
        child.expect("Ctrl-D to leave")
        child.expect("> ")
        child.sendline("/mode")
        child.expect("mode: ar")
        child.expect("> ")
        # turn 1: a short answer
        child.sendline("/help")
        child.expect("/reset")
        child.expect("> ")
        child.sendline("hello")
        child.expect("hello\r\n")  # the echo; the answer runs long (random weights): Ctrl-C stops it
        child.expect(r"\S", timeout=30)  # some output has started
        child.sendintr()
        child.expect(r"\[stopped\]")
        child.expect("> ")
        child.sendline("/stats")
        child.expect("tokens/forward")
        child.expect("> ")
        child.sendline("/mode diffusion")
        child.expect("mode: diffusion")
        child.expect("> ")
        child.sendline("second turn")
        child.expect("second turn\r\n")  # turn 2, in diffusion, stopped again
        child.expect(r"\S", timeout=30)
        child.sendintr()
        child.expect(r"\[stopped\]")
        child.expect("> ")
        child.sendline("/mode spec")
        child.expect("mode: spec")
        child.expect("> ")
        child.sendline("third turn")
        child.expect("third turn\r\n")  # the echo
        child.expect(r"\S", timeout=30)
        child.sendintr()
        child.expect(r"\[stopped\]")
        child.expect("> ")
        child.sendline("/stats")
        child.expect(r"\[spec: ")
        child.expect("> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before


def test_infill_fills_the_gaps_as_the_python_api_does():
    """`nld infill` prints the text with its gaps filled (the known text
    unchanged), the same as Model.infill_text on the same prompt."""
    import nld_cpp
    from nld_cpp.models import default_model_path

    res = run("infill", "-p", "Copy: a b c d e f", "--text", "a b [___] d e [___]", "--gap-tokens", "1", "--stats")
    assert res.returncode == 0, res.stderr
    with nld_cpp.Model(str(default_model_path()), n_ctx=256, n_threads=2) as model:
        prefix = model.apply_chat_template([{"role": "user", "content": "Copy: a b c d e f"}], enable_thinking=False)
        want = model.infill_text(prefix, "a b [___] d e [___]", gap_tokens=1)
    assert res.stdout.strip() == want["text"].strip()
    assert res.stdout.startswith("a b") and "infill: 2 tokens in 2 gaps" in res.stderr
    one_line_error(run("infill", "-p", "x", "--text", "no gap here"), "no gap placeholder")


def test_infill_visual_redraws_the_block_under_a_terminal():
    """--visual on a terminal: the block is drawn with shaded masked cells,
    then the line is replaced by the filled text."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(NLD[0], NLD[1:] + ["infill", "-p", "Repeat: The dog sleeps on the warm mat.", "--text",
                                             "The dog [___] on the warm mat.", "--gap-tokens", "3", "--visual",
                                             "--threshold", "0"],
                          encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.expect(pexpect.EOF)
    out = child.before
    child.close()
    assert child.exitstatus == 0, out
    assert "\u2591" in out and "step 1" in out  # a masked cell was shown, then the steps
    final = out.replace("\r\n", "\n").split("\r")[-1]
    assert final.startswith("\x1b[K") and "The dog" in final and "on the warm mat." in final
