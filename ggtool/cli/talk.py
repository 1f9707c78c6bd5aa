"""chat, run, serve: talk to a model (thin commands over ggtool.chat)."""

from __future__ import annotations

import json
import sys

import click

from . import cli, say


def talk_options(f):
    """Options shared by chat, run and serve: placement, template, draft, sampling."""
    opts = [
        click.option("--ctx", type=click.IntRange(min=16), default=None,
                     help="context size in tokens [default: the model's trained context, capped to fit in memory]"),
        click.option("--gpu-layers", type=click.IntRange(min=-1), default=None,
                     help="layers on the GPU, -1 = all [default: as many as fit in free GPU memory]"),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: physical cores]"),
        click.option("--template", default=None, metavar="NAME|FILE",
                     help="chat template instead of the model's own: chatml, llama3, mistral, gemma, phi3, or a file"),
        click.option("--draft", default=None, metavar="MODEL|lookup",
                     help="speculative decoding: a small model with the same vocabulary, or prompt lookup"),
        click.option("--draft-tokens", type=click.IntRange(min=1), default=None, help="tokens guessed per step [default: 8 model, 10 lookup]"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def sampling_options(f):
    """Sampling flags shared by chat and run."""
    opts = [
        click.option("--temp", type=float, default=0.8, show_default=True, help="temperature; 0 = greedy"),
        click.option("--top-p", type=float, default=0.95, show_default=True),
        click.option("--top-k", type=int, default=40, show_default=True),
        click.option("--min-p", type=float, default=0.05, show_default=True),
        click.option("--repeat-penalty", type=float, default=1.0, show_default=True),
        click.option("--seed", type=int, default=None, help="random seed (same seed + settings = same text)"),
        click.option("-n", "--max-tokens", type=click.IntRange(min=1), default=None,
                     help="most tokens per answer [default: up to the context]"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def load_engine(model, ctx, gpu_layers, threads, draft, draft_tokens):
    from ..chat.engine import Engine, resolve_model

    return Engine.load(resolve_model(model), ctx=ctx, gpu_layers=gpu_layers, threads=threads, draft=draft,
                       draft_tokens=draft_tokens)


def make_sampling(temp, top_p, top_k, min_p, repeat_penalty, seed):
    from ..chat.engine import Sampling

    return Sampling(temp=temp, top_p=top_p, top_k=top_k, min_p=min_p, repeat_penalty=repeat_penalty, seed=seed)


@cli.command()
@click.argument("model")
@click.option("--system", default=None, help="system prompt")
@click.option("-v", "--verbose", is_flag=True, help="tokens, time to first token and tokens/s after each answer")
@talk_options
@sampling_options
def chat(model, system, verbose, ctx, gpu_layers, threads, template, draft, draft_tokens,
         temp, top_p, top_k, min_p, repeat_penalty, seed, max_tokens):
    """Chat with MODEL (a .gguf file) in the terminal, with the model's own chat template."""
    from ..chat.repl import Repl
    from ..chat.session import Session

    eng = load_engine(model, ctx, gpu_layers, threads, draft, draft_tokens)
    try:
        for line in eng.describe():
            say(line)
        sess = Session(eng, make_sampling(temp, top_p, top_k, min_p, repeat_penalty, seed), system=system,
                       max_tokens=max_tokens, template_override=template, notify=say)
        say(sess.template.describe())
        Repl(sess, verbose=verbose).run()
    finally:
        eng.close()


@cli.command()
@click.argument("model")
@click.argument("prompt", required=False)
@click.option("--raw", is_flag=True, help="plain text completion of PROMPT, no chat template")
@click.option("--system", default=None, help="system prompt")
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object (text, token counts, timings, stop reason) instead of streaming")
@click.option("-v", "--verbose", is_flag=True, help="where it runs, and speed after the answer")
@talk_options
@sampling_options
def run(model, prompt, raw, system, as_json, verbose, ctx, gpu_layers, threads, template, draft, draft_tokens,
        temp, top_p, top_k, min_p, repeat_penalty, seed, max_tokens):
    """One answer to PROMPT (or the prompt on stdin), streamed to stdout."""
    from ..chat.session import answer_once
    from ..errors import InputError

    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise click.UsageError("give a PROMPT, or pipe one on stdin")
        prompt = sys.stdin.read()
        if not prompt.strip():
            raise InputError("the prompt on stdin is empty")
    eng = load_engine(model, ctx, gpu_layers, threads, draft, draft_tokens)
    try:
        if verbose:
            for line in eng.describe():
                say(line)
        else:
            say(eng.summary())
        if raw and verbose:
            say("plain completion (--raw), no chat template")

        def show(piece):
            click.echo(piece, nl=False)
            sys.stdout.flush()

        res = answer_once(eng, prompt, raw=raw, system=system, template=template,
                          sampling=make_sampling(temp, top_p, top_k, min_p, repeat_penalty, seed),
                          max_tokens=max_tokens, on_text=None if as_json else show, notify=say)
        if as_json:
            out = {"model": str(eng.path), **res.to_json()}
            if not raw:
                out["template"] = eng.template().source
            click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        else:
            click.echo()
            if verbose:
                say(res.stats_line())
    finally:
        eng.close()


@cli.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--api-key", default=None, help="require this key (Authorization: Bearer KEY)")
@talk_options
def serve(model, host, port, api_key, ctx, gpu_layers, threads, template, draft, draft_tokens):
    """An OpenAI-compatible HTTP server for MODEL (needs the `serve` extra)."""
    from ..chat.server import _server_modules, serve as do_serve

    _server_modules()   # fail before loading the model if the extra is missing
    eng = load_engine(model, ctx, gpu_layers, threads, draft, draft_tokens)
    try:
        for line in eng.describe():
            say(line)
        tpl = eng.template(template)
        say(tpl.describe())
        do_serve(eng, tpl, host=host, port=port, log=say, api_key=api_key)
    finally:
        eng.close()
