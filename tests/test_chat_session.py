"""The conversation inside the context window (a tiny model: the answers are noise, the
bookkeeping is what is tested), /save and /load, and the stop-string streaming."""

from __future__ import annotations

import json

import pytest

from tests.tinymodels import make_checkpoint

pytestmark = pytest.mark.usefixtures("llama_cpp_ok")


@pytest.fixture(scope="module")
def tiny_chat_gguf(tmp_path_factory):
    from ggtool.convert import convert

    root = tmp_path_factory.mktemp("sess")
    ck = make_checkpoint(root / "ck", "llama", tokenizer="smollm", hidden=64, layers=2, heads=4, kv_heads=2)
    out = root / "tiny.gguf"
    convert(ck, out, "F16", progress=False)
    return out


@pytest.fixture
def engine(tiny_chat_gguf):
    from ggtool.chat.engine import Engine

    eng = Engine.load(tiny_chat_gguf, ctx=256)
    yield eng
    eng.close()


def _session(engine, **kw):
    from ggtool.chat.engine import Sampling
    from ggtool.chat.session import Session

    notes = []
    s = Session(engine, Sampling(temp=0), notify=notes.append, **kw)
    return s, notes


LONG = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
        "nothing to do: once or twice she had peeped into the book her sister was reading")


def test_overflow_drops_oldest_turns_with_a_notice(engine):
    s, notes = _session(engine, system="SYSTEM PROMPT: be brief.", max_tokens=8)
    for i in range(8):
        s.ask(f"turn {i}: {LONG}")
        assert len(s.prompt_tokens(s.messages)) <= engine.n_ctx
    assert notes and all("[context: dropped the oldest" in n for n in notes)
    assert "256-token context" in notes[0] and "system prompt" in notes[0]
    conv = s.conversation()
    assert conv[0] == {"role": "system", "content": "SYSTEM PROMPT: be brief."}    # survives
    assert conv[-2]["content"].startswith("turn 7:")                                  # the newest turn
    assert conv[1]["role"] == "user"                                                  # whole turns dropped
    assert not any(m["content"].startswith("turn 0:") for m in conv)
    assert s.dropped_total >= 2
    prompt = s.template.render(conv)
    assert "SYSTEM PROMPT" in prompt and "turn 7:" in prompt


def test_a_single_message_too_long_is_a_clear_error(engine):
    from ggtool.chat.engine import ContextFull

    s, _ = _session(engine, system="sys")
    with pytest.raises(ContextFull, match="more than the 256-token context") as e:
        s.ask(LONG * 10)
    assert "--ctx" in e.value.hint
    assert s.messages == []          # nothing half-added


def test_answer_that_fills_the_context_says_so(engine):
    s, notes = _session(engine)
    res = s.ask("hi")        # no --max-tokens: may run to the end of the context
    if res.stop_reason == "context":
        assert any("filled the 256-token context" in n for n in notes)
    assert res.prompt_tokens + res.completion_tokens <= engine.n_ctx


def test_save_load_round_trip(engine, tmp_path):
    s, _ = _session(engine, system="be kind", max_tokens=4)
    s.ask("first question")
    s.ask("second question")
    path = s.save(tmp_path / "chat.json")
    saved = json.loads(path.read_text())
    assert saved["format"] == "ggtool-chat" and saved["system"] == "be kind"
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "user", "assistant"]
    assert not list(tmp_path.glob("*.incomplete"))
    t, _ = _session(engine, max_tokens=4)
    assert t.load(path) == 4
    assert t.system == "be kind" and t.messages == s.messages
    assert t.template.render(t.conversation()) == s.template.render(s.conversation())


def test_load_rejects_other_files(engine, tmp_path):
    from ggtool.errors import InputError

    s, _ = _session(engine)
    s.messages = [{"role": "user", "content": "keep me"}]
    for text in ["not json", json.dumps({"messages": []}),
                 json.dumps({"format": "ggtool-chat", "messages": [{"role": "tool", "content": "x"}]})]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InputError):
            s.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="no such file"):
        s.load(tmp_path / "missing.json")
    assert s.messages == [{"role": "user", "content": "keep me"}]     # a failed load loses nothing


def test_stop_strings_are_held_back_and_cut(engine):
    from ggtool.chat.engine import _held_back

    assert _held_back("hello <|im", ["<|im_end|>"]) == 4
    assert _held_back("hello", ["<|im_end|>"]) == 0
    assert _held_back("a <", ["<|im_end|>", "</s>"]) == 1


def test_stream_pieces_add_up_to_the_text(engine):
    from ggtool.chat.engine import Sampling

    pieces = []
    toks = engine.tokenize_raw("Alice was")
    res = engine.stream(toks, Sampling(temp=0), max_tokens=12, on_text=pieces.append)
    assert "".join(pieces) == res.text
    assert (res.completion_tokens, res.stop_reason) == (12, "length") or res.stop_reason == "stop"
    assert res.text == engine.llm.detokenize(res.ids).decode("utf-8", errors="replace")
