"""Chat templates: ggtool's rendered prompt equals a direct jinja2 rendering (as transformers'
apply_chat_template does it) of the source checkpoint's tokenizer_config.json template, for
ChatML, Llama 3, Mistral, Gemma and Qwen style templates carried through ggtool's own GGUF writer.
A model without a template gets a clear error; a template that raises or runs away too.

The templates below are written for these tests in the style of each family (default system
prompts, system extraction, role checks with raise_exception, trim, tools, namespace...).
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.tinymodels import make_checkpoint

pytestmark = pytest.mark.usefixtures("llama_cpp_ok")

CHATML_SMOL = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3 = r"""{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none %}
    {{- "You may call these functions:\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

QWEN = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
    {{- "\n\n# Tools\n<tools>" }}
    {%- for tool in tools %}{{- "\n" }}{{- tool | tojson }}{%- endfor %}
    {{- "\n</tools><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(turns=0) %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {%- set ns.turns = ns.turns + 1 %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

SYSTEM = {"role": "system", "content": "You answer in one short sentence. "}
TURNS = [{"role": "user", "content": "Hello there!"},
         {"role": "assistant", "content": " Hi! How can I help?\n"},
         {"role": "user", "content": "  What is 2+2?\n"}]

# name -> (arch, tokenizer kind, template, extra tokenizer_config keys, messages)
CASES = {
    "chatml": ("llama", "smollm", CHATML_SMOL, {}, [SYSTEM] + TURNS),
    "chatml-default-system": ("llama", "smollm", CHATML_SMOL, {}, TURNS),
    "llama3": ("llama", "llama3", LLAMA3, {"eos_token": "<|im_end|>"}, [SYSTEM] + TURNS),
    "mistral": ("mistral", "spm", MISTRAL, {}, TURNS),
    "gemma": ("llama", "spm", GEMMA, {}, TURNS),
    "qwen": ("qwen2", "qwen2", QWEN, {}, [SYSTEM] + TURNS),
}


def hf_render(template: str, messages, bos, eos, add_generation_prompt=True):
    """The independent oracle: jinja2 set up as transformers' apply_chat_template sets it up."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(messages=messages, tools=None, documents=None,
                                            add_generation_prompt=add_generation_prompt,
                                            bos_token=bos, eos_token=eos)


def _tok_text(v):
    return (v.get("content") if isinstance(v, dict) else v) or ""


@pytest.fixture(scope="module")
def template_models(tmp_path_factory):
    """name -> (GGUF written by ggtool, source tokenizer_config.json dict)."""
    from ggtool.convert import convert

    root = tmp_path_factory.mktemp("tpl")
    out = {}
    built = {}
    for name, (arch, tok, template, extra, _) in CASES.items():
        key = (arch, tok, template)
        if key not in built:
            ck = make_checkpoint(root / name, arch, tokenizer=tok, chat_template=template, tokenizer_config=extra,
                                 hidden=64, layers=1, heads=4, kv_heads=2)
            gg = root / f"{name}.gguf"
            convert(ck, gg, "F16", progress=False)
            built[key] = (gg, json.loads((ck / "tokenizer_config.json").read_text()))
        out[name] = built[key]
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_rendering_matches_jinja2_on_the_source_template(name, template_models):
    from ggtool.chat.engine import Engine

    gg, tc = template_models[name]
    messages = CASES[name][4]
    want = hf_render(tc["chat_template"], messages, _tok_text(tc.get("bos_token")), _tok_text(tc.get("eos_token")))
    eng = Engine.load(gg, ctx=256)
    try:
        tpl = eng.template()
        assert tpl.source.startswith("the model's own")
        got = tpl.render(messages)
        assert got == want
        assert got.count("What is 2+2?") == 1
        # the prompt for the first answer, too (no assistant turn yet)
        first = [m for m in messages if m["role"] == "system"] + TURNS[:1]
        assert tpl.render(first) == hf_render(tc["chat_template"], first, _tok_text(tc.get("bos_token")),
                                              _tok_text(tc.get("eos_token")))
    finally:
        eng.close()


def test_template_style_is_named(template_models):
    from ggtool.chat.engine import Engine

    styles = {"chatml": "ChatML", "llama3": "Llama 3", "mistral": "Mistral", "gemma": "Gemma", "qwen": "ChatML"}
    for name, style in styles.items():
        eng = Engine.load(template_models[name][0], ctx=256)
        try:
            assert style in eng.template().describe()
        finally:
            eng.close()


def test_template_that_raises_gives_a_clear_error(template_models):
    from ggtool.chat.engine import Engine
    from ggtool.chat.templates import TemplateError

    eng = Engine.load(template_models["gemma"][0], ctx=256)
    try:
        with pytest.raises(TemplateError, match="refused this conversation: System role not supported"):
            eng.template().render([SYSTEM] + TURNS)
    finally:
        eng.close()


@pytest.mark.parametrize("template, what", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "range"),
    ("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}", "characters"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recurses"),
    ("{% for m in messages %}{{ m.content ", "does not parse"),
    ("{{ messages[5].content.upper() }}", "failed"),
])
def test_runaway_or_broken_templates_fail_clearly(template, what, llama_cpp_ok):
    from ggtool.chat.templates import ChatTemplate, TemplateError

    with pytest.raises(TemplateError, match=what) as e:
        ChatTemplate(template, "test").render(TURNS)
    assert "--template" in e.value.hint


def test_builtin_and_file_templates(tmp_path, llama_cpp_ok):
    from ggtool.chat.templates import BUILTIN, TemplateError, named

    for name in BUILTIN:
        tpl = named(name, "<s>", "</s>")
        text = tpl.render([SYSTEM] + TURNS)
        assert "What is 2+2?" in text and "one short sentence" in text, name
    (tmp_path / "t.jinja").write_text(CHATML_SMOL)
    assert named(str(tmp_path / "t.jinja")).render(TURNS[:1]).endswith("<|im_start|>assistant\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": GEMMA}))
    assert named(str(tmp_path / "tokenizer_config.json"), "<bos>").style == "Gemma"
    with pytest.raises(TemplateError, match="not a built-in template"):
        named("nosuch")


@pytest.fixture(scope="module")
def no_template_gguf(tmp_path_factory):
    from ggtool.convert import convert

    root = tmp_path_factory.mktemp("notpl")
    ck = make_checkpoint(root / "ck", "llama", tokenizer="gpt2", chat_template=None, hidden=64, layers=1,
                         heads=4, kv_heads=2)
    gg = root / "notpl.gguf"
    convert(ck, gg, "F16", progress=False)
    return gg


def test_model_without_template_gets_the_clear_message(no_template_gguf, capsys):
    from ggtool.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", str(no_template_gguf), "hello", "-n", "4"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "Error: notpl.gguf has no chat template" in err
    assert "Hint: pass one with --template chatml|llama3|mistral|gemma|phi3" in err


def test_model_without_template_runs_with_template_or_raw(no_template_gguf, capsys):
    from ggtool.cli import main

    main(["run", str(no_template_gguf), "hello", "-n", "4", "--template", "chatml", "--json", "--temp", "0"])
    out = json.loads(capsys.readouterr().out)
    assert out["template"] == "built-in 'chatml' (--template)"
    assert out["completion_tokens"] <= 4
    main(["run", str(no_template_gguf), "hello", "-n", "4", "--raw", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert "template" not in out and out["prompt_tokens"] >= 1


def test_unknown_template_name_is_an_error(no_template_gguf, capsys):
    from ggtool.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", str(no_template_gguf), "hello", "--template", "nosuch", "--threads", "1"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "Error: --template nosuch: not a built-in template" in err and "Hint: " in err
