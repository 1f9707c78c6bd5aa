"""A conversation kept inside the context window.

Before each answer the whole conversation is rendered with the chat template and counted in
tokens. When it would not leave room for an answer, the oldest turns are dropped, a user turn
together with the answer that followed it, and the user is told (never a silent truncation). The
system prompt and the newest turn always survive; if those two alone do not fit, that is an error
that says by how much.

/save writes {"format": "ggtool-chat", "version": 1, "system": ..., "messages": [...]} (atomically);
/load reads it back.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, OutputError
from .engine import ContextFull, Engine, Result, Sampling

FORMAT = "ggtool-chat"
ROLES = ("user", "assistant")


def answer_reserve(n_ctx: int, max_tokens: int | None) -> int:
    """Tokens kept free for the answer when deciding what fits."""
    if max_tokens and max_tokens > 0:
        return min(max_tokens, n_ctx // 2)
    return max(16, min(512, n_ctx // 4))


@dataclass
class Session:
    engine: Engine
    sampling: Sampling = field(default_factory=Sampling)
    system: str | None = None
    max_tokens: int | None = None
    template_override: str | None = None
    notify: object = print           # where notices go (the REPL: stderr)
    messages: list[dict] = field(default_factory=list)   # user/assistant turns, oldest first
    last: Result | None = None
    dropped_total: int = 0

    def __post_init__(self):
        self.template = self.engine.template(self.template_override)

    # ------------------------------------------------------------------ the conversation
    def conversation(self, turns: list[dict] | None = None) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + list(self.messages if turns is None else turns)

    def prompt_tokens(self, turns: list[dict]) -> list[int]:
        return self.engine.tokenize_chat(self.template.render(self.conversation(turns)))

    def fit(self, new_turn: dict) -> list[int]:
        """Tokens of the conversation + new_turn, dropping the oldest turns until an answer fits."""
        n_ctx = self.engine.n_ctx
        reserve = answer_reserve(n_ctx, self.max_tokens)
        turns = self.messages + [new_turn]
        dropped = []
        while True:
            toks = self.prompt_tokens(turns)
            if len(toks) + reserve <= n_ctx:
                break
            if len(turns) == 1:
                what = "the system prompt and your message" if self.system else "your message"
                raise ContextFull(f"{what} take {len(toks)} tokens; with {reserve} kept for the answer "
                                  f"that is more than the {n_ctx}-token context")
            # drop the oldest user turn and everything up to the next user turn
            cut = 1
            while cut < len(turns) - 1 and turns[cut]["role"] != "user":
                cut += 1
            dropped += turns[:cut]
            turns = turns[cut:]
        if dropped:
            self.messages = turns[:-1]
            self.dropped_total += len(dropped)
            n_user = sum(m["role"] == "user" for m in dropped)
            self.notify(f"[context: dropped the oldest {len(dropped)} messages ({n_user} of your turns) "
                        f"to stay within the {n_ctx}-token context; the system prompt and your newest "
                        "message are kept]")
        return toks

    def ask(self, text: str, on_text=None, cancel=None) -> Result:
        turn = {"role": "user", "content": text}
        toks = self.fit(turn)
        res = self.engine.stream(toks, self.sampling, max_tokens=self.max_tokens, on_text=on_text,
                                 stop=self.template.stop, cancel=cancel, lstrip=True)
        self.messages += [turn, {"role": "assistant", "content": res.text}]
        self.last = res
        if res.stop_reason == "context":
            self.notify(f"[the answer filled the {self.engine.n_ctx}-token context and was cut; the oldest "
                        "turns will be dropped before the next answer]")
        return res

    def reset(self) -> None:
        self.messages = []
        self.last = None

    def context_used(self) -> int:
        """Tokens the conversation takes now (without a new turn)."""
        return len(self.prompt_tokens(self.messages)) if self.messages or self.system else 0

    # ------------------------------------------------------------------ /save and /load
    def to_json(self) -> dict:
        return {"format": FORMAT, "version": 1, "model": str(self.engine.path), "system": self.system,
                "messages": self.messages}

    def save(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        data = json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"
        try:
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".incomplete", dir=path.parent or ".")
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
        return path

    def load(self, path: str | Path) -> int:
        """Replace the conversation with the one saved in `path`; returns the number of messages."""
        system, messages = read_chat_file(path)
        self.system, self.messages, self.last = system, messages, None
        return len(messages)


def read_chat_file(path: str | Path) -> tuple[str | None, list[dict]]:
    path = Path(path).expanduser()
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not a saved chat ({e.__class__.__name__}: {e})",
                         hint="/load reads files written by /save") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or not isinstance(obj.get("messages"), list):
        raise InputError(f"{path} is not a saved chat (no '{FORMAT}' format marker)",
                         hint="/load reads files written by /save")
    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        raise InputError(f"{path}: 'system' must be a string")
    messages = []
    for m in obj["messages"]:
        if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            raise InputError(f"{path}: a message must be {{'role': 'user'|'assistant', 'content': str}}, "
                             f"got {str(m)[:80]}")
        messages.append({"role": m["role"], "content": m["content"]})
    return system, messages


def answer_once(engine: Engine, prompt: str, *, raw: bool = False, system: str | None = None,
                template: str | None = None, sampling: Sampling | None = None, max_tokens: int | None = None,
                on_text=None, notify=print) -> Result:
    """One answer to `prompt` (`ggtool run`): through the chat template, or as plain completion."""
    sampling = sampling or Sampling()
    if raw:
        return engine.stream(engine.tokenize_raw(prompt), sampling, max_tokens=max_tokens, on_text=on_text)
    s = Session(engine, sampling, system=system, max_tokens=max_tokens, template_override=template, notify=notify)
    return s.ask(prompt, on_text=on_text)
