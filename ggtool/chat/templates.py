"""Chat templates: the GGUF's own `tokenizer.chat_template`, or one the user names.

A template is rendered by llama-cpp-python's `Jinja2ChatFormatter` (a Jinja sandbox set up as
transformers sets it up: trim_blocks, lstrip_blocks, loop controls, `raise_exception`,
`strftime_now`), with three bounds so that a broken or hostile template fails clearly instead of
hanging: a time limit, an output size limit and a cap on `range()` iterations.

There is never a silent fallback: a model without a template is an error that says how to pass
one (`--template chatml|llama3|mistral|gemma|phi3|FILE`).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GgtoolError

RENDER_SECONDS = 5.0          # a template that takes longer is stuck
RENDER_MAX_CHARS = 16_000_000  # a prompt this long is a runaway loop, not a conversation
RANGE_BUDGET = 1_000_000      # total range() iterations per render

# Built-in templates, written for ggtool; each names the text that ends an assistant turn.
BUILTIN: dict[str, tuple[str, list[str]]] = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
        " + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        ["<|im_end|>"]),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role']"
        " + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
        ["<|eot_id|>"]),
    "mistral": (
        "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
        "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}"
        "{% elif message['role'] == 'user' %}{{ '[INST] ' + ns.system + message['content'] + ' [/INST]' }}"
        "{% set ns.system = '' %}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}",
        []),
    "gemma": (
        "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
        "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}{% else %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\\n' + ns.system + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{% set ns.system = '' %}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}",
        ["<end_of_turn>"]),
    "phi3": (
        "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}",
        ["<|end|>"]),
}
BUILTIN_NAMES = "|".join(BUILTIN)
TEMPLATE_HINT = (f"pass one with --template {BUILTIN_NAMES} or --template FILE (a Jinja file, or a "
                 "tokenizer_config.json with a chat_template)")

# How to recognise a template's family, for the "which template" line.
_STYLES = [("<|im_start|>", "ChatML"), ("<|start_header_id|>", "Llama 3"), ("<start_of_turn>", "Gemma"),
           ("[INST]", "Mistral/Llama 2"), ("<|assistant|>", "Phi-3/Zephyr")]
_STYLE_STOPS = {"ChatML": ["<|im_end|>"], "Llama 3": ["<|eot_id|>"], "Gemma": ["<end_of_turn>"],
                "Phi-3/Zephyr": ["<|end|>"]}


class TemplateError(GgtoolError):
    """The chat template is missing, unreadable, or failed to render."""

    hint = TEMPLATE_HINT


def style_of(text: str) -> str:
    for marker, name in _STYLES:
        if marker in text:
            return name
    return "custom"


@dataclass
class ChatTemplate:
    """A Jinja chat template plus what it needs: the model's BOS/EOS text and stop strings."""

    text: str
    source: str                     # where it came from, for the user
    bos_token: str = ""
    eos_token: str = ""
    stop: list[str] = field(default_factory=list)

    @property
    def style(self) -> str:
        return style_of(self.text)

    def describe(self) -> str:
        return f"chat template: {self.source}, {self.style} style"

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
        """The prompt text for `messages` ([{role, content}, ...]). Raises TemplateError."""
        return _render_bounded(self, messages, add_generation_prompt, extra)


# ------------------------------------------------------------------ choosing a template

def from_metadata(metadata: dict, bos_token: str, eos_token: str, override: str | None = None,
                  model_name: str = "the model") -> ChatTemplate:
    """The template to use: `override` (a built-in name or a file) if given, else the GGUF's own
    `tokenizer.chat_template`; none at all is a TemplateError, never a fallback."""
    if override:
        tpl = named(override, bos_token, eos_token)
    else:
        text = metadata.get("tokenizer.chat_template")
        if not text:
            raise TemplateError(f"{model_name} has no chat template (no tokenizer.chat_template in the GGUF)",
                                hint=TEMPLATE_HINT + "; or use `ggtool run --raw` for plain text completion")
        tpl = ChatTemplate(text, "the model's own (GGUF tokenizer.chat_template)", bos_token, eos_token)
        tpl.stop = list(_STYLE_STOPS.get(tpl.style, []))
    # Render a tiny conversation once now, so a broken template fails at start, not mid-chat.
    tpl.render([{"role": "user", "content": "Hi"}])
    return tpl


def named(spec: str, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """A built-in template by name, or a template file (Jinja text, or JSON with chat_template)."""
    key = spec.strip().lower()
    if key in BUILTIN:
        text, stop = BUILTIN[key]
        return ChatTemplate(text, f"built-in '{key}' (--template)", bos_token, eos_token, list(stop))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise TemplateError(f"--template {spec}: not a built-in template ({', '.join(BUILTIN)}) and not a file",
                            hint=TEMPLATE_HINT)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"cannot read the template file {path}: {e}") from None
    if path.suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise TemplateError(f"{path} is not valid JSON: {e}") from None
        text = obj.get("chat_template") if isinstance(obj, dict) else None
        if isinstance(text, list):  # [{"name": "default", "template": ...}, ...]
            text = next((t.get("template") for t in text if t.get("name") == "default"), None)
        if not isinstance(text, str) or not text:
            raise TemplateError(f"{path} has no chat_template string")
    tpl = ChatTemplate(text, f"file {path} (--template)", bos_token, eos_token)
    tpl.stop = list(_STYLE_STOPS.get(tpl.style, []))
    return tpl


# ------------------------------------------------------------------ bounded rendering

class _Budget:
    def __init__(self, limit: int):
        self.left = limit

    def range(self, *args):
        r = range(*args)
        self.left -= len(r)
        if self.left < 0:
            raise _Runaway(f"range() iterations passed {RANGE_BUDGET:,}")
        return r


class _Runaway(Exception):
    pass


def _formatter(tpl: ChatTemplate, add_generation_prompt: bool):
    try:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    except ImportError as e:
        from ..llamacpp import INSTALL_HINT

        raise GgtoolError(f"llama-cpp-python is not installed ({e})", hint=INSTALL_HINT) from None
    import jinja2

    # Jinja2ChatFormatter compiles its template at once, folding constants: `{{ 10**10**10 }}`
    # would be computed right there. So it gets an empty template, and ours is compiled in its
    # (transformers-like) environment once that environment is bounded.
    fmt = Jinja2ChatFormatter(template="", eos_token=tpl.eos_token, bos_token=tpl.bos_token,
                              add_generation_prompt=add_generation_prompt)
    env = _bounded(fmt._environment.environment)
    try:
        fmt._environment, fmt.template = env.from_string(tpl.text), tpl.text
    except jinja2.TemplateError as e:
        raise TemplateError(f"the chat template ({tpl.source}) does not parse: {_one_line(e)}") from None
    except (RecursionError, MemoryError, ValueError, TypeError, NameError, OverflowError) as e:  # Jinja's own compiler
        raise TemplateError(f"the chat template ({tpl.source}) does not compile: {e.__class__.__name__}: "
                            f"{_one_line(e)}") from None
    namespace = fmt._environment.root_render_func.__globals__  # the compiled template's module
    for name in ("str_join", "markup_join"):                   # `a ~ b` concatenates through these
        if name in namespace:
            namespace[name] = _sized(namespace[name])
    return fmt


MAX_INT_BITS = 1 << 16  # a number of ~20,000 digits: anything bigger in a chat template is a runaway


def _one_line(e: BaseException, n: int = 300) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def _sized(fn):
    """fn whose str/list result may not pass RENDER_MAX_CHARS (its inputs are bounded, so the
    result is at most a few times that before it is refused)."""
    def sized(*a, **k):
        r = fn(*a, **k)
        if isinstance(r, (str, list, tuple)) and len(r) > RENDER_MAX_CHARS:
            raise _Runaway(f"a value passed {RENDER_MAX_CHARS:,} characters")
        return r
    return sized


def _check_sizes(what: str, args, kwargs, limit: int = RENDER_MAX_CHARS) -> None:
    for v in (*args, *kwargs.values()):
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > limit:
            raise _Runaway(f"{what} was given {v if v.bit_length() < 64 else 'a huge number'}")


def _check_binop(op: str, a, b) -> None:
    seq = (str, list, tuple)
    if op == "*":
        if isinstance(a, int) and isinstance(b, seq):
            a, b = b, a
        if isinstance(a, seq) and isinstance(b, int) and len(a) * b > RENDER_MAX_CHARS:
            raise _Runaway(f"a value of {len(a):,} x {b:,} items")
        if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_INT_BITS:
            raise _Runaway("a product of huge numbers")
    elif op == "**" and isinstance(a, int) and isinstance(b, int) and b > 0:
        if max(a.bit_length(), 1) * b > MAX_INT_BITS and abs(a) > 1:
            raise _Runaway("a power too large to compute")
    elif op == "%" and isinstance(a, str):
        import re

        widths = [int(w) for w in re.findall(r"%[-#0 +]*(\d+)", a)]
        stars = "%*" in a or "%-*" in a or ".*" in a
        _check_sizes("a % format", widths + (list(b) if stars and isinstance(b, tuple) else []), {})


def _bounded(env):
    """`env` (a Jinja sandbox) with the operators, calls and filters that can build a huge value
    or number checked first, so that memory stays bounded as time and output already are."""
    import re

    base_binop, base_call = env.call_binop, env.call
    env.intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(context, op, left, right):
        _check_binop(op, left, right)
        r = base_binop(context, op, left, right)
        if isinstance(r, (str, list, tuple)) and len(r) > RENDER_MAX_CHARS:
            raise _Runaway(f"a value passed {RENDER_MAX_CHARS:,} characters")
        return r

    def call(context, obj, *args, **kwargs):
        name = getattr(obj, "__name__", "")
        _check_sizes(f"{name}()", args, kwargs, 1000 if name == "generate_lorem_ipsum" else RENDER_MAX_CHARS)
        if name in ("format", "format_map") and isinstance(getattr(obj, "__self__", None), str):
            _check_sizes("a format width", [int(w) for w in re.findall(r"[<>=^]?(\d+)", obj.__self__)], {})
        return _sized(base_call)(context, obj, *args, **kwargs)

    env.call_binop, env.call = call_binop, call
    for name, f in list(env.filters.items()):
        env.filters[name] = _bounded_filter(name, f)
    return env


def _bounded_filter(name: str, f):
    from jinja2.utils import _PassArg

    skip = 1 if _PassArg.from_obj(f) is not None else 0  # a context comes first

    def bounded(*args, **kwargs):
        whole, args = args, args[skip:]
        value = args[0] if args else None
        _check_sizes(f"the {name} filter", args[1:], kwargs, 1000 if name == "tojson" else RENDER_MAX_CHARS)
        if name == "indent" and isinstance(value, str):
            width = args[1] if len(args) > 1 else kwargs.get("width", 4)
            width = len(width) if isinstance(width, str) else width
            if isinstance(width, int) and (value.count("\n") + 1) * width > RENDER_MAX_CHARS:
                raise _Runaway("the indent filter would pass the size limit")
        if name == "replace" and isinstance(value, str) and len(args) > 2:
            old, new = str(args[1]), str(args[2])
            if len(new) > len(old) and (value.count(old) if old else len(value) + 1) * (len(new) - len(old)) > RENDER_MAX_CHARS:
                raise _Runaway("the replace filter would pass the size limit")
        if name == "join" and isinstance(value, (list, tuple)) and len(args) > 1:
            if len(value) * len(str(args[1])) > RENDER_MAX_CHARS:
                raise _Runaway("the join filter would pass the size limit")
        return _sized(f)(*whole, **kwargs)

    # keep what Jinja reads off a filter (pass_context & co.) and its signature
    import functools

    return functools.wraps(f)(bounded)


@contextlib.contextmanager
def _alarm(seconds: float):
    """SIGALRM after `seconds` (main thread on Unix only): stops a loop that prints nothing."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise _Runaway(f"rendering took more than {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _render_bounded(tpl: ChatTemplate, messages: list[dict], add_generation_prompt: bool, extra: dict) -> str:
    import jinja2

    cache = tpl.__dict__.setdefault("_formatters", {})
    fmt = cache.get(add_generation_prompt)
    if fmt is None:
        fmt = cache[add_generation_prompt] = _formatter(tpl, add_generation_prompt)
    template = fmt._environment            # the compiled jinja2.Template Jinja2ChatFormatter renders
    budget = _Budget(RANGE_BUDGET)
    template.environment.globals["range"] = budget.range

    def raise_exception(message):
        raise ValueError(message)

    # The variables Jinja2ChatFormatter.__call__ passes, rendered piece by piece so that time and
    # size are checked while it runs.
    variables = dict(messages=messages, eos_token=tpl.eos_token, bos_token=tpl.bos_token,
                     raise_exception=raise_exception, add_generation_prompt=add_generation_prompt,
                     functions=None, function_call=None, tools=None, tool_choice=None,
                     strftime_now=fmt.strftime_now)
    variables.update(extra)
    parts, size, t0 = [], 0, time.monotonic()
    try:
        with _alarm(RENDER_SECONDS):
            for piece in template.generate(**variables):
                parts.append(piece)
                size += len(piece)
                if size > RENDER_MAX_CHARS:
                    raise _Runaway(f"the output passed {RENDER_MAX_CHARS:,} characters")
                if time.monotonic() - t0 > RENDER_SECONDS:
                    raise _Runaway(f"rendering took more than {RENDER_SECONDS:.0f} s")
    except _Runaway as e:
        raise TemplateError(f"the chat template ({tpl.source}) runs away: {e}") from None
    except ValueError as e:  # raise_exception(...) in the template
        raise TemplateError(f"the chat template ({tpl.source}) refused this conversation: {_one_line(e)}",
                            hint="the template's own check; e.g. some templates allow no system "
                                 "prompt, or need user/assistant turns to alternate") from None
    except RecursionError:
        raise TemplateError(f"the chat template ({tpl.source}) recurses without end") from None
    except MemoryError:
        raise TemplateError(f"the chat template ({tpl.source}) runs away: it ran out of memory") from None
    except (jinja2.TemplateError, TypeError, KeyError, AttributeError, IndexError, ZeroDivisionError,
            OverflowError, AssertionError, NameError) as e:
        raise TemplateError(f"the chat template ({tpl.source}) failed: {e.__class__.__name__}: {_one_line(e)}") from None
    return "".join(parts)
