"""`ggtool chat` driven as a real terminal program in a pseudo-terminal (pexpect), on the real
SmolLM2 as a Q8_0 GGUF written by ggtool."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

pexpect = pytest.importorskip("pexpect")

pytestmark = [pytest.mark.usefixtures("llama_cpp_ok"), pytest.mark.slow]

TIMEOUT = 180


class Chunks:
    """pexpect's logfile_read: every read from the terminal, with its time."""

    def __init__(self):
        self.reads: list[tuple[float, str]] = []

    def write(self, data):
        self.reads.append((time.monotonic(), data))

    def flush(self):
        pass


def spawn(model, cwd, *extra):
    env = dict(os.environ, TERM="dumb", PYTHONUNBUFFERED="1", COLUMNS="200")
    child = pexpect.spawn(sys.executable, ["-m", "ggtool", "chat", str(model), "--temp", "0", "-n", "256",
                                           "--ctx", "1024", "--threads", "1", *extra],
                          cwd=str(cwd), env=env, encoding="utf-8", timeout=TIMEOUT, dimensions=(50, 200))
    child.logfile_read = Chunks()
    return child


def prompt(child):
    child.expect_exact(">>> ")


def test_chat_session_in_a_terminal(smollm2_q8_gguf, tmp_path):
    child = spawn(smollm2_q8_gguf, tmp_path, "--verbose", "--system", "You are a helpful assistant.")
    try:
        child.expect("CPU: ")
        child.expect("KV cache")
        child.expect("chat template: the model's own")
        prompt(child)

        # 1. a question: the answer says Paris (that it streams is shown in 4. below)
        t_sent = time.monotonic()
        child.sendline("What is the capital of France?")
        child.expect("Paris")
        prompt(child)
        reads = [d for t, d in child.logfile_read.reads if t >= t_sent]
        assert "tokens/s" in "".join(reads)          # --verbose stats after the answer

        # 2. a multi-line message: trailing backslash, then a paste block
        child.sendline("Say hello to \\")
        child.expect_exact("... ")
        child.sendline("my friend Bob.")
        prompt(child)
        child.sendline('"""')
        child.expect_exact("... ")
        child.sendline("Line one.")
        child.sendline("Line two.")
        child.sendline('"""')
        prompt(child)

        # 3. /save, /reset, /load round trip
        child.sendline("/save chat.json")
        child.expect(r"saved 6 messages")
        prompt(child)
        saved = json.loads((tmp_path / "chat.json").read_text())
        users = [m["content"] for m in saved["messages"] if m["role"] == "user"]
        assert users == ["What is the capital of France?", "Say hello to \nmy friend Bob.", "Line one.\nLine two."]
        assert "Paris" in saved["messages"][1]["content"]
        child.sendline("/reset")
        child.expect_exact("[conversation cleared]")
        prompt(child)
        child.sendline("/stats")
        child.expect(r"context: \d+/1024 tokens in use, 0 messages")
        prompt(child)
        child.sendline("/load chat.json")
        child.expect("loaded 6 messages")
        prompt(child)
        child.sendline("/stats")
        child.expect(r"context: \d+/1024 tokens in use, 6 messages")
        prompt(child)

        # 4. Ctrl-C mid-answer stops it and keeps the chat; the words seen before Ctrl-C were on
        #    the screen while the answer was still being generated: it streams
        child.sendline("/reset")
        prompt(child)
        child.sendline("Write a very long story about a dragon who learns to cook. Make it detailed.")
        child.expect_exact("Make it detailed.\r\n")   # the terminal's echo of the line
        child.expect(r"\w+\s+\w+\s+\w+")          # the answer has started streaming
        child.sendintr()
        child.expect_exact("[stopped; the chat goes on]")
        prompt(child)
        child.sendline("/stats")
        child.expect(r"2 messages")
        child.expect(r"stop: interrupted")
        prompt(child)
        child.sendline("What is the capital of France?")
        child.expect("Paris")
        prompt(child)

        # 5. unknown commands are named; /exit leaves cleanly
        child.sendline("/frobnicate")
        child.expect("unknown command /frobnicate")
        prompt(child)
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before


def test_ctrl_c_at_the_prompt_and_ctrl_d(smollm2_q8_gguf, tmp_path):
    child = spawn(smollm2_q8_gguf, tmp_path, "--system", "You are a pirate.")
    try:
        prompt(child)
        # input() writes the prompt before it waits in select(): a SIGINT that lands in between is
        # seen only after the next keystroke (CPython's readline loop). A person cannot press
        # Ctrl-C within microseconds of the prompt; a test on a loaded machine can.
        time.sleep(0.5)
        child.sendintr()
        child.expect_exact("(Ctrl-D or /exit to leave)")
        prompt(child)
        child.sendline("/system")
        child.expect_exact("[system prompt: 'You are a pirate.']")
        prompt(child)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
