"""The terminal program behind `ggtool chat`.

Answers stream to stdout; notices, stats and errors go to stderr. A line ending in a backslash
continues on the next line; a line that is just \"\"\" opens a paste block that the next \"\"\"
closes. Ctrl-C stops the answer in progress (the chat goes on); Ctrl-D or /exit leaves.
"""

from __future__ import annotations

import signal
import sys
import threading

from ..errors import GgtoolError, format_error
from .session import Session

HELP = """\
/help              this list
/reset             forget the conversation (keeps the system prompt)
/system TEXT       set the system prompt (/system alone shows it, /system - clears it)
/save FILE         save the conversation as JSON
/load FILE         load a conversation saved with /save
/stats             speed of the last answer and how full the context is
/exit              leave (or Ctrl-D)
A line ending in \\ continues on the next line; \"\"\" on its own line starts and ends a paste block.
Ctrl-C stops an answer in progress."""

PROMPT, MORE = ">>> ", "... "


class Repl:
    def __init__(self, session: Session, verbose: bool = False, out=None, err=None, read=input):
        self.session, self.verbose = session, verbose
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.read = read

    def say(self, msg: str) -> None:
        self.err.write(msg + "\n")
        self.err.flush()

    # ------------------------------------------------------------------ input
    def read_message(self) -> str:
        """One message: a line, backslash-continued lines, or a \"\"\" paste block. EOFError on Ctrl-D."""
        line = self.read(PROMPT)
        if line.strip() == '"""':
            lines = []
            while True:
                more = self.read(MORE)
                if more.strip() == '"""':
                    return "\n".join(lines)
                lines.append(more)
        parts = []
        while line.endswith("\\"):
            parts.append(line[:-1])
            line = self.read(MORE)
        parts.append(line)
        return "\n".join(parts)

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        try:
            import readline  # noqa: F401  line editing and history for input(), where available
        except ImportError:
            pass
        self.say("Type a message; /help for commands; Ctrl-C stops an answer, Ctrl-D or /exit leaves.")
        # Ctrl-C at the prompt must raise KeyboardInterrupt even when ggtool was started with SIGINT
        # ignored (a background job of a script, where Python then installs no handler of its own)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        while True:
            try:
                text = self.read_message()
            except EOFError:
                self.say("")
                return 0
            except KeyboardInterrupt:
                self.say("\n(Ctrl-D or /exit to leave)")
                continue
            if not text.strip():
                continue
            if text.startswith("/") and not text.startswith("//"):
                if self.command(text.strip()) == "exit":
                    return 0
                continue
            self.answer(text[1:] if text.startswith("//") else text)

    def answer(self, text: str) -> None:
        stop = []

        def on_sigint(signum, frame):
            stop.append(True)

        def show(piece: str):
            self.out.write(piece)
            self.out.flush()

        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            res = self.session.ask(text, on_text=show, cancel=lambda: bool(stop))
        except GgtoolError as e:
            self.say(format_error(e))
            return
        finally:
            signal.signal(signal.SIGINT, old)
        self.out.write("\n")
        self.out.flush()
        if res.stop_reason == "interrupted":
            self.say("[stopped; the chat goes on]")
        elif res.stop_reason == "length":
            self.say(f"[cut at --max-tokens {self.session.max_tokens}]")
        if self.verbose:
            self.say(f"[{res.stats_line()}]")

    # ------------------------------------------------------------------ slash commands
    def command(self, line: str) -> str | None:
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        s = self.session
        try:
            if name in ("/exit", "/quit", "/bye"):
                return "exit"
            if name in ("/help", "/?"):
                self.say(HELP)
            elif name == "/reset":
                s.reset()
                self.say("[conversation cleared]")
            elif name == "/system":
                if not arg:
                    self.say(f"[system prompt: {s.system!r}]" if s.system else "[no system prompt]")
                else:
                    s.system = None if arg == "-" else arg
                    self.say("[system prompt cleared]" if s.system is None else "[system prompt set]")
            elif name == "/save":
                if not arg:
                    self.say("usage: /save FILE")
                else:
                    self.say(f"[saved {len(s.messages)} messages to {s.save(arg)}]")
            elif name == "/load":
                if not arg:
                    self.say("usage: /load FILE")
                else:
                    n = s.load(arg)
                    self.say(f"[loaded {n} messages from {arg}]")
            elif name == "/stats":
                self.say(self.stats())
            else:
                self.say(f"unknown command {name}; /help lists them (start a message with // to send a slash)")
        except GgtoolError as e:
            self.say(format_error(e))
        return None

    def stats(self) -> str:
        s = self.session
        used = s.context_used()
        lines = [f"context: {used}/{s.engine.n_ctx} tokens in use, {len(s.messages)} messages"
                 + (f", {s.dropped_total} dropped to fit" if s.dropped_total else "")]
        lines.append(f"last answer: {s.last.stats_line()}" if s.last else "no answer yet")
        return "\n".join(lines)
