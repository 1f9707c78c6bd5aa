"""`ggtool serve`: started on a free loopback port, one OpenAI-style chat completion over plain
HTTP, and the context rule (an over-long conversation is trimmed with a notice in the log)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
pytest.importorskip("sse_starlette")
pytest.importorskip("starlette_context")
pytest.importorskip("pydantic_settings")

pytestmark = [pytest.mark.usefixtures("llama_cpp_ok"), pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=120):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(smollm2_q8_gguf, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "ggtool", "serve", str(smollm2_q8_gguf), "--port", str(port),
                                 "--ctx", "512", "--threads", "1"], stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"ggtool serve exited: {log.read_text()}")
            try:
                urllib.request.urlopen(base + "/v1/models", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        else:
            pytest.fail(f"ggtool serve did not answer: {log.read_text()}")
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_chat_completion_over_http(server):
    base, log = server
    out = post(base + "/v1/chat/completions", {
        "model": "whatever", "temperature": 0, "max_tokens": 24,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "What is the capital of France?"}]})
    msg = out["choices"][0]["message"]
    assert msg["role"] == "assistant" and "Paris" in msg["content"]
    assert out["usage"]["prompt_tokens"] > 5 and out["usage"]["completion_tokens"] <= 24
    text = log.read_text()
    assert "127.0.0.1" in text and "chat template: the model's own" in text
    models = json.loads(urllib.request.urlopen(base + "/v1/models", timeout=10).read())
    assert [m["id"] for m in models["data"]] == ["smollm2-135m.Q8_0"]


def test_overlong_conversation_is_trimmed_with_a_notice(server):
    base, log = server
    long = "Alice was beginning to get very tired of sitting by her sister on the bank. " * 6
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(12):
        messages += [{"role": "user", "content": f"{i}: {long}"}, {"role": "assistant", "content": "Yes."}]
    messages.append({"role": "user", "content": "What is the capital of France?"})
    out = post(base + "/v1/chat/completions", {"messages": messages, "temperature": 0, "max_tokens": 16})
    assert out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"] <= 512
    assert "Paris" in out["choices"][0]["message"]["content"]
    time.sleep(0.2)
    assert "[context: dropped the oldest" in log.read_text()
