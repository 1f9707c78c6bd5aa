"""The ggtool command line: thin Click commands over the library.

Data goes to stdout (tables, --json); progress, warnings and hints go to stderr.
Errors are formatted in one place (`main`): 'Error: ...' and 'Hint: ...', exit code 1.
"""

from __future__ import annotations

import json
import os
import sys

import click

from . import __version__
from .errors import GgtoolError, format_error
from .paths import ENV_VARS
from .units import human_bytes

ENV_HELP = "\b\nEnvironment variables:\n" + "\n".join(f"  {k:<20} {v}" for k, v in ENV_VARS.items())


def say(msg: str) -> None:
    """Talk to the user (stderr)."""
    click.echo(msg, err=True)


EXIT_ERROR = 1        # a GgtoolError: bad input, a full disk, ... (Error: + Hint:)
EXIT_BUG = 70         # an unexpected exception: a bug in ggtool (EX_SOFTWARE)
EXIT_INTERRUPTED = 130


class Failure(click.ClickException):
    """A GgtoolError on its way out of a command: shown as 'Error:' and 'Hint:' lines, exit 1.
    Raised inside the group, so `main` and click's CliRunner print the same thing."""

    exit_code = EXIT_ERROR

    def __init__(self, err: GgtoolError):
        super().__init__(err.message)
        self.err = err

    def show(self, file=None) -> None:
        show_error(self.err)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GgtoolError as e:
            if os.environ.get("GGTOOL_DEBUG"):
                raise
            raise Failure(e) from None


@click.group(cls=_Group, epilog=ENV_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ggtool")
def cli():
    """ggtool: get a model onto your machine as a GGUF at the size you can afford."""


def _mix_names() -> str:
    from .plan.llamacpp import MIXES

    return ", ".join(MIXES)


def _quant_rules() -> list[str]:
    from .plan import RULES

    return [r for r in RULES if r != "plain"]


def _default_rules() -> str:
    from .plan import DEFAULT_RULES

    return DEFAULT_RULES


def quant_options(f):
    """Options shared by `convert --quant` and `quantize`."""
    opts = [
        click.option("--rules", default=_default_rules(), show_default=True, type=click.Choice(_quant_rules()),
                     help="sensitivity: the mix's byte size, bits placed by this model's measured per-tensor "
                          "KLD sensitivity (measured once, then cached); llama.cpp: llama-quantize's fixed rules"),
        click.option("--imatrix", "imatrix_file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="importance matrix (from ggtool imatrix or llama-imatrix; GGUF or legacy .dat)"),
        click.option("--target-bpw", type=float, default=None,
                     help="budget in bits per weight instead of the mix's size (sensitivity rules)"),
        click.option("--max-size", default=None, metavar="SIZE",
                     help="largest file, e.g. 4GB, 750MB, 123456789 (sensitivity rules)"),
        click.option("--tensor-type", "tensor_types", multiple=True, metavar="REGEX=TYPE",
                     help="force a type for tensors whose name matches REGEX (repeatable)"),
        click.option("--output-tensor-type", default=None, help="type for output.weight"),
        click.option("--token-embedding-type", default=None, help="type for token_embd.weight"),
        click.option("--threads", type=int, default=None, help="quantizer threads (default: all cores)"),
        click.option("--json", "as_json", is_flag=True, help="print the result as JSON on stdout"),
        click.option("-q", "--quiet", is_flag=True, help="no progress bar"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def mix_opts(tensor_types, output_tensor_type, token_embedding_type) -> dict:
    from .plan.llamacpp import parse_tensor_type

    return {"overrides": [parse_tensor_type(s) for s in tensor_types],
            "output_type": output_tensor_type, "token_embd_type": token_embedding_type}


def parse_size(s: str) -> int:
    """'4GB', '750MB', '1.5GiB', '123456' -> bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?i?B?)?\s*", s or "", re.IGNORECASE)
    unit = (m.group(2) or "").upper().rstrip("B") if m else None
    mult = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}
    if unit not in mult:
        raise click.BadParameter(f"{s!r} is not a size (e.g. 4GB, 750MB, 123456789)", param_hint="--max-size")
    return int(float(m.group(1)) * mult[unit])


def quant_kwargs(rules, imatrix_file, target_bpw, max_size, tensor_types, output_tensor_type,
                 token_embedding_type) -> dict:
    """convert()'s keyword arguments for `--quant` from the shared options."""
    if (target_bpw is not None or max_size is not None) and rules != "sensitivity":
        raise click.UsageError("--target-bpw/--max-size need --rules sensitivity")
    if target_bpw is not None and max_size is not None:
        raise click.UsageError("give --target-bpw or --max-size, not both")
    kw = {"rules": rules, "imatrix": imatrix_file, **mix_opts(tensor_types, output_tensor_type, token_embedding_type)}
    if target_bpw is not None:
        kw["target_bpw"] = target_bpw
    if max_size is not None:
        kw["max_size"] = parse_size(max_size)
    return kw


def report(res, as_json: bool) -> None:
    counts = res.plan.type_counts()
    summary = {
        "output": str(res.path), "mix": res.mix, "rules": res.plan.rules, "tensors": res.n_tensors,
        "bytes": res.nbytes, "params": res.n_params, "bits_per_weight": round(res.bits_per_weight, 3),
        "seconds": round(res.seconds, 2), "tensor_types": dict(counts),
        "warnings": res.warnings, "notes": res.notes,
    }
    a = res.allocation
    if a is not None:
        summary["allocation"] = {"budget_bytes": a.budget, "allocated_bytes": a.used, "mix_bytes": a.mix_bytes,
                                 "predicted_kld": a.predicted, "predicted_kld_mix": a.predicted_mix,
                                 "imatrix_weighted": a.weighted, "summary": a.summary}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    kinds = ", ".join(f"{n} {t}" for t, n in counts.most_common())
    say(f"wrote {res.path}: {res.n_tensors} tensors ({kinds}), {human_bytes(res.nbytes)}, "
        f"{res.bits_per_weight:.2f} bits/weight, {res.seconds:.1f} s")
    for note in res.notes:
        say(f"note: {note}")
    if a is not None:
        say(f"allocation: {a.summary}")


@cli.command()
@click.argument("src", type=click.Path(path_type=str))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=str), help="output .gguf file")
@click.option("--type", "out_type", default=None,
              type=click.Choice(["F32", "F16", "BF16", "Q8_0"], case_sensitive=False),
              help="one type for every matrix (norms and biases stay F32) [default: F16]")
@click.option("--quant", default=None, metavar="MIX",
              help="quantize in the same pass: " + _mix_names())
@quant_options
def convert(src, out, out_type, quant, rules, imatrix_file, target_bpw, max_size, tensor_types,
            output_tensor_type, token_embedding_type, threads, as_json, quiet):
    """Convert a Hugging Face checkpoint folder (or a GGUF) to GGUF.

    With --quant, safetensors go straight to the quantized GGUF: no F16 file in between.
    """
    from .convert import convert as do_convert
    from .store import resolve_model

    src = str(resolve_model(src))
    if out_type and quant:
        raise click.UsageError("give --type or --quant, not both")
    if quant:
        res = do_convert(src, out, quant, threads=threads, progress=not quiet, log=say,
                         **quant_kwargs(rules, imatrix_file, target_bpw, max_size, tensor_types,
                                        output_tensor_type, token_embedding_type))
    else:
        if imatrix_file or target_bpw is not None or max_size is not None:
            raise click.UsageError("--imatrix/--target-bpw/--max-size go with --quant")
        if tensor_types or output_tensor_type or token_embedding_type:
            raise click.UsageError("--tensor-type/--output-tensor-type/--token-embedding-type go with --quant")
        res = do_convert(src, out, (out_type or "F16").upper(), threads=threads, progress=not quiet, log=say)
    report(res, as_json)


@cli.command()
@click.argument("src", type=click.Path(path_type=str))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--quant", required=True, metavar="MIX", help="Q2_K .. Q8_0, see `ggtool convert --help`")
@click.option("--allow-requantize", is_flag=True, help="accept an already quantized input (loses quality)")
@quant_options
def quantize(src, out, quant, allow_requantize, rules, imatrix_file, target_bpw, max_size, tensor_types,
             output_tensor_type, token_embedding_type, threads, as_json, quiet):
    """Quantize an F32/F16/BF16 GGUF (as llama-quantize does)."""
    from .convert import convert as do_convert
    from .errors import InputError
    from .sources import GGUFSource, open_source
    from .store import resolve_model

    src = str(resolve_model(src))
    source = open_source(src)
    if not isinstance(source, GGUFSource):
        source.close()
        raise InputError(f"{src} is not a GGUF file", hint=f"for a checkpoint folder use: ggtool convert {src} -o {out} --quant {quant}")
    if source.is_quantized and not allow_requantize:
        source.close()
        raise InputError(f"{src} is already quantized", hint="quantize from an F32/F16/BF16 GGUF, or pass --allow-requantize")
    try:
        kw = quant_kwargs(rules, imatrix_file, target_bpw, max_size, tensor_types, output_tensor_type,
                          token_embedding_type)
    except BaseException:
        source.close()
        raise
    res = do_convert(src, out, quant, threads=threads, progress=not quiet, log=say, source=source, **kw)
    report(res, as_json)


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
    from .chat.engine import Engine, resolve_model

    return Engine.load(resolve_model(model), ctx=ctx, gpu_layers=gpu_layers, threads=threads, draft=draft,
                       draft_tokens=draft_tokens)


def make_sampling(temp, top_p, top_k, min_p, repeat_penalty, seed):
    from .chat.engine import Sampling

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
    from .chat.repl import Repl
    from .chat.session import Session

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
    from .chat.session import answer_once
    from .errors import InputError

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
    from .chat.server import _server_modules, serve as do_serve

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


def _bench_defaults():
    from .bench import DEFAULT_CHUNKS, DEFAULT_FIT_CTX, DEFAULT_MAX_KLD, DEFAULT_QUANTS

    return DEFAULT_QUANTS, DEFAULT_CHUNKS, DEFAULT_MAX_KLD, DEFAULT_FIT_CTX


_BQ, _BCHUNKS, _BKLD, _BFIT = _bench_defaults()


@cli.command()
@click.argument("model")
@click.option("--quants", default=",".join(_BQ), show_default=True, help="levels to measure, comma-separated")
@click.option("--text", "text_path", default=None, type=click.Path(dir_okay=False),
              help="evaluation text, UTF-8 [default: the shipped Alice in Wonderland]")
@click.option("--chunks", default=_BCHUNKS, show_default=True, type=int, help="chunks of --ctx tokens to score")
@click.option("--ctx", default=512, show_default=True, type=int, help="tokens per chunk (the second half is scored)")
@click.option("--threads", type=int, default=None, help="llama.cpp and quantizer threads (default: all cores)")
@click.option("--reps", default=5, show_default=True, type=int, help="speed repetitions (0: no speed test)")
@click.option("--against", type=click.Choice(["llama.cpp"]), default=None,
              help="also quantize every level with llama.cpp's llama_model_quantize, same base, same run")
@click.option("--max-kld", default=_BKLD, show_default=True, type=float, help="sweet spot: mean KLD under this")
@click.option("--fit-ctx", default=_BFIT, show_default=True, type=int, help="sweet spot: must fit memory with this context")
@click.option("--gpu-layers", default=0, show_default=True, help="layers to offload to the GPU (-1 = all)")
@click.option("--fresh", is_flag=True, help="measure every row again (quantized files and log-probs stay cached)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON on stdout")
@click.option("--csv", "as_csv", is_flag=True, help="print the rows as CSV on stdout")
@click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False),
              help="write a PNG: size vs KLD and size vs tg t/s (needs matplotlib: pip install 'ggtool[plot]')")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars")
def bench(model, quants, text_path, chunks, ctx, threads, reps, against, max_kld, fit_ctx, gpu_layers, fresh,
          as_json, as_csv, plot_path, quiet):
    """Size, quality (perplexity, KLD vs the base) and speed of every quantization level.

    MODEL is a Hugging Face checkpoint folder or an F32/F16/BF16 GGUF (the base every level is
    measured against). A second run reuses the cache and resumes where one stopped.
    """
    from . import benchreport
    from .bench import bench as run_bench

    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    if plot_path:
        benchreport.require_matplotlib()
    res = run_bench(model, [q for q in quants.split(",") if q.strip()], text_path=text_path, chunks=chunks,
                    ctx=ctx, threads=threads, reps=reps, against=against, max_kld=max_kld, fit_ctx=fit_ctx,
                    n_gpu_layers=gpu_layers, fresh=fresh, progress=not quiet, log=say)
    if plot_path:
        benchreport.plot(res, plot_path)
        say(f"wrote {plot_path}")
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
    elif as_csv:
        click.echo(benchreport.csv_text(res), nl=False)
    else:
        click.echo(benchreport.markdown(res))
        click.echo()
        click.echo(benchreport.sweet_spot_line(res))
    say(f"{res.tokens_scored} tokens scored of {res.text['name']}; {res.extra['seconds']:.0f} s")


@cli.command()
@click.argument("model_a", type=click.Path(exists=True, dir_okay=False))
@click.argument("model_b", type=click.Path(exists=True, dir_okay=False))
@click.argument("prompts", nargs=-1)
@click.option("-n", "--max-tokens", default=48, show_default=True, help="tokens per answer")
@click.option("--chunks", default=4, show_default=True, help="chunks of the evaluation text for KLD(B||A) (0: none)")
@click.option("--ctx", default=512, show_default=True)
@click.option("--text", "text_path", default=None, type=click.Path(dir_okay=False), help="evaluation text")
@click.option("--threads", type=int, default=None)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON on stdout")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars")
def compare(model_a, model_b, prompts, max_tokens, chunks, ctx, text_path, threads, as_json, quiet):
    """The same prompts through two GGUFs, answers side by side, with the KLD of B against A.

    Greedy decoding (argmax), so both runs are deterministic. Without PROMPTS, a few built-in ones.
    """
    import shutil

    from .compare import compare as run_compare, side_by_side

    res = run_compare(model_a, model_b, prompts, max_tokens=max_tokens, chunks=chunks, ctx=ctx,
                      text_path=text_path, threads=threads, progress=not quiet, log=say)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
    else:
        click.echo(side_by_side(res, width=shutil.get_terminal_size((100, 24)).columns))


@cli.command("imatrix")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=str), help="imatrix file to write (GGUF)")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="calibration text (default: the text shipped with ggtool)")
@click.option("--chunks", type=int, default=None, help="use at most N chunks of the text")
@click.option("--ctx", "n_ctx", type=int, default=512, show_default=True, help="tokens per chunk")
@click.option("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def imatrix_cmd(model, out, text_file, chunks, n_ctx, threads, quiet):
    """Collect an importance matrix of MODEL (a GGUF) on calibration text, as llama-imatrix does."""
    import time
    from pathlib import Path

    from .errors import InputError
    from .formats.imatrix import write_gguf
    from .imatrix import collect

    t0 = time.perf_counter()
    text, name = None, "calibration.txt (ggtool default)"
    if text_file:
        try:
            text, name = Path(text_file).read_text(encoding="utf-8"), Path(text_file).name
        except UnicodeDecodeError as e:
            raise InputError(f"{text_file} is not UTF-8 text ({e.reason})", hint="convert it to UTF-8 first") from None
    im = collect(model, text, chunks=chunks, n_ctx=n_ctx, threads=threads, progress=not quiet, dataset=name)
    path = write_gguf(im, out)
    say(f"wrote {path}: {len(im.entries)} matrices, {im.chunk_count} chunks of {n_ctx} tokens from {name}, "
        f"{time.perf_counter() - t0:.1f} s")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json):
    """Which backends are active: quantizer kernels, llama.cpp build."""
    from . import quants

    info = {"ggtool": __version__, "python": sys.version.split()[0],
            "native_kernels": sorted(quants.NATIVE_KERNELS),
            "force_numpy": quants.force_numpy(),
            "quant_types": quants.type_names()}
    try:
        from .llamacpp import llama_cpp, system_info
        info["llama_cpp_python"] = llama_cpp().__version__
        si = system_info()
        info["llama_cpp_system_info"] = si.strip()
        info["amx"] = "AMX_INT8 = 1" in si
        from .chat.hardware import human, probe

        m = probe()
        info["gpu_offload"] = m.gpu_offload
        info["gpu_devices"] = [f"{d.name} {d.description} ({human(d.free)} free)" for d in m.devices]
        if m.gpu_hint:
            info["gpu_hint"] = m.gpu_hint
    except GgtoolError as e:
        info["llama_cpp_python"] = None
        info["llama_cpp_error"] = e.message
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for k, v in info.items():
        click.echo(f"{k:<22} {', '.join(v) if isinstance(v, list) else v}")


def _mixes() -> list[str]:
    from .plan.llamacpp import MIXES

    return list(MIXES)


@cli.command()
@click.option("--prompt", default="What is the capital of France?", show_default=True)
@click.option("--quant", "--type", "out_type", default="Q4_K_M", show_default=True,
              type=click.Choice(_mixes(), case_sensitive=False), help="the quant `ggtool pull smollm2-135m` makes")
@click.option("--bench-chunks", default=4, show_default=True, type=click.IntRange(min=0),
              help="chunks of the closing bench (0: no bench)")
def demo(prompt, out_type, bench_chunks):
    """The main job end to end on the default model: ggtool pull smollm2-135m, ggtool run, a short bench."""
    from .demo import run

    run(say, click.echo, prompt=prompt, out_type=out_type.upper(), bench_chunks=bench_chunks)


# --------------------------------------------------------------------------- the store (#9)

def _table(rows: list[list[str]], header: list[str]) -> None:
    """A plain aligned table on stdout."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


@cli.command()
@click.argument("name", required=False)
@click.option("--quant", default=None, metavar="QUANT",
              help="quant to make (safetensors) or take (GGUF repo) [default: Q4_K_M]")
@click.option("--revision", default=None, help="branch, tag or commit [default: main]")
@click.option("--name", "store_name", default=None, help="store it under this name (default: from NAME)")
@click.option("--dry-run", is_flag=True, help="print the plan (files, bytes, disk, conversion) and stop")
@click.option("--list", "list_aliases", is_flag=True, help="list the catalog's aliases")
@click.option("--threads", type=int, default=None, help="quantizer threads (default: all cores)")
@click.option("--json", "as_json", is_flag=True, help="print the plan / the stored model as JSON on stdout")
@click.option("--quiet", is_flag=True, help="no progress bars")
def pull(name, quant, revision, store_name, dry_run, list_aliases, threads, as_json, quiet):
    """Get a model into the store: an alias, org/repo, org/repo:QUANT, or a local folder/.gguf.

    \b
      ggtool pull smollm2-135m                  catalog alias, converted to Q4_K_M
      ggtool pull Qwen/Qwen3-0.6B --quant Q8_0  safetensors repo: download + convert in one pass
      ggtool pull bartowski/Llama-3.2-1B-Instruct-GGUF:q4_k_m   a ready GGUF
      ggtool pull ./my-checkpoint --name mine   a local folder (or .gguf), no second copy

    Downloads resume after a kill, are checked against the Hub's sha256 and retried on stalls.
    """
    from .hub import catalog
    from .hub.pull import describe, plan, run

    if list_aliases:
        entries = list(catalog.load().values())
        if as_json:
            click.echo(json.dumps([{"alias": e.alias, "repo": e.repo, "architecture": e.architecture,
                                    "convertible": e.convertible, "params": e.params, "gated": e.gated,
                                    "gguf": list(e.gguf), "description": e.description} for e in entries], indent=2))
            return
        _table([[e.alias, e.params, e.repo, "convert" if e.convertible else "GGUF", e.description] for e in entries],
               ["ALIAS", "PARAMS", "REPO", "HOW", "DESCRIPTION"])
        return
    if not name:
        raise click.UsageError("give a model: an alias (see --list), org/repo, org/repo:QUANT or a path")
    p = plan(name, quant, revision, name=store_name, log=say)
    if dry_run:
        click.echo(json.dumps(p.to_dict(), indent=2) if as_json else describe(p))
        return
    stored = run(p, progress=not quiet, threads=threads, log=say)
    if as_json:
        click.echo(json.dumps({**stored.summary(), "manifest": stored.manifest}, indent=2))


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout")
def list_models(as_json):
    """Stored models: name, size, modified, source."""
    from . import store

    rows = [s.summary() for s in store.entries()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table([[r["tag"], human_bytes(r["size"]), (r["modified"] or "").replace("T", " ").rstrip("Z"), r["source"] or ""]
            for r in rows], ["NAME", "SIZE", "MODIFIED", "SOURCE"])
    if not rows:
        say("no models in the store yet: try `ggtool pull smollm2-135m`")


def _show_tensors(path, as_json: bool) -> None:
    """`show --tensors`: each tensor's type, bits per weight and, when ggtool measured the model's
    sensitivity (plan/sensitivity.py), its share of the predicted KLD."""
    from .plan.allocate import show_tensors

    info = show_tensors(path)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{'tensor':<36} {'type':>6} {'bits/w':>7} {'KLD share':>9}")
    for r in info["tensors"]:
        share = r.get("kld_share_pct")
        click.echo(f"{r['name']:<36} {r['type']:>6} {r['bits_per_weight']:>7.3f} "
                   f"{'' if share is None else f'{share:.1f}%':>9}")
    click.echo(f"{len(info['tensors'])} tensors, {info['params']:,} weights, {info['bits_per_weight']:.3f} bits/weight")
    s = info["sensitivity"]
    if s is None:
        say("no sensitivity cache for this file's model (it is made by ggtool convert/quantize --quant)")
    else:
        say(f"predicted KLD {s['predicted_kld']:.4g} (sensitivity {s['key']}, "
            f"{'imatrix-weighted' if s['imatrix_weighted'] else 'data-free'} errors)")


@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout")
@click.option("--tensors", "per_tensor", is_flag=True,
              help="one line per tensor: type, bits/weight, share of the predicted KLD (when measured)")
def show(model, as_json, per_tensor):
    """Architecture, parameters, context length, quant and tensor types, chat template, source, path."""
    from . import store

    if per_tensor:
        from pathlib import Path

        _show_tensors(model if Path(model).expanduser().is_file() else store.lookup(model).files[0], as_json)
        return
    info = store.show(model)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    src = info.get("source") or {}
    rows = [("name", info.get("tag") or info.get("model_name")), ("architecture", info["architecture"]),
            ("parameters", f"{info['parameters']:,}"), ("context length", info["context_length"]),
            ("embedding length", info["embedding_length"]), ("layers", info["layers"]),
            ("quant", info["quant"]), ("file type", info["file_type"]),
            ("tensor types", ", ".join(f"{n} {t}" for t, n in info["tensor_types"].items())),
            ("size", human_bytes(info["size"])), ("rules", info.get("rules")),
            ("source", " @ ".join(str(x) for x in (src.get("repo") or src.get("path") or src.get("kind"),
                                                   (src.get("commit") or "")[:12]) if x) if src else None),
            ("path", info["path"])]
    for k, v in rows:
        if v not in (None, ""):
            click.echo(f"{k:<17} {v}")
    tpl = info.get("chat_template")
    click.echo("chat template     " + ("(none: llama.cpp will fall back to a generic one)" if not tpl else ""))
    if tpl:
        for line in tpl.splitlines():
            click.echo(f"    {line}")


@cli.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout")
def rm(models, as_json):
    """Remove stored models: NAME:QUANT, or NAME for all its quants."""
    from . import store

    removed = store.rm(list(models))
    if as_json:
        click.echo(json.dumps(removed, indent=2))
        return
    for r in removed:
        shared = "" if r["freed"] >= r["size"] else " (the rest is shared with the Hugging Face cache)"
        say(f"removed {r['tag']}: {human_bytes(r['freed'])} freed{shared}")


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout")
def cp(src, dst, as_json):
    """Store a model under a second name (hard links: no second copy)."""
    from . import store

    s = store.cp(src, dst)
    if as_json:
        click.echo(json.dumps(s.summary(), indent=2))
        return
    say(f"copied {src} -> {s.tag}")


@cli.command()
@click.option("--dry-run", is_flag=True, help="only say what would be removed")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout")
def prune(dry_run, as_json):
    """Remove partial downloads, what killed pulls left, and orphaned blobs in the HF cache."""
    from . import store

    res = store.prune(dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    if res["items"]:
        _table([[i["kind"], human_bytes(i["bytes"]), i["path"]] for i in res["items"]], ["KIND", "SIZE", "PATH"])
    say(f"{'would free' if dry_run else 'freed'} {human_bytes(res['freed'])} ({len(res['items'])} item(s))")


@cli.command()
@click.argument("name")
@click.option("--revision", default="main", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout")
def quants(name, revision, as_json):
    """Which quants of a model exist (GGUF repo) or ggtool can make (safetensors), their sizes,
    and which fit this machine's RAM/VRAM."""
    from .hub.ggufs import available

    res = available(name, revision)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    m = res["machine"]
    gpu = f", {human_bytes(m['vram_total'])} VRAM" if m["vram_total"] else ", no GPU found"
    say(f"this machine: {human_bytes(m['ram_total'])} RAM ({human_bytes(m['ram_available'])} available){gpu}")
    _table([[r["quant"] + (" *" if r["quant"] == res["recommended"] else ""),
             ("~" if r["estimate"] else "") + human_bytes(r["size"]), r["fit"],
             "ggtool convert" if r["kind"] == "convert" else r["repo"]] for r in res["quants"]],
           ["QUANT", "SIZE", "FITS", "FROM"])
    for n in res["notes"]:
        say(n)
    best = next((r for r in res["quants"] if r["quant"] == res["recommended"]), None)
    if best:
        how = f"{best['repo']}:{best['quant']}" if best["kind"] == "gguf" else f"{name} --quant {best['quant']}"
        say(f"* the biggest that fits now: ggtool pull {how}")


def _color_stderr() -> bool:
    """Colour on a terminal, unless NO_COLOR is set (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and sys.stderr.isatty()


def show_error(err: GgtoolError) -> None:
    color = _color_stderr()
    click.echo(format_error(err, color=color), err=True, color=color)


def main(argv=None) -> None:
    """Entry point: run the CLI. GgtoolErrors become 'Error:/Hint:' lines and exit 1; Ctrl-C
    exits 130; anything else is a bug: one 'Error:' line that says so, exit 70
    (GGTOOL_DEBUG=1 shows the traceback instead)."""
    try:
        cli.main(args=argv, prog_name="ggtool", standalone_mode=False)
    except click.exceptions.Abort:  # click has already ended the line
        click.echo("Interrupted; nothing half-written was left behind.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("\nInterrupted; nothing half-written was left behind.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        if os.environ.get("GGTOOL_DEBUG"):
            raise
        bug = GgtoolError(f"internal error (a bug in ggtool {__version__}): {type(e).__name__}: {e}",
                          hint="rerun with GGTOOL_DEBUG=1 to see the traceback, and please report it")
        show_error(bug)
        sys.exit(EXIT_BUG)


if __name__ == "__main__":
    main()
