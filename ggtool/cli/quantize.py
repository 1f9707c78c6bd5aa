"""convert, quantize, imatrix: make GGUF files (thin commands over ggtool.convert and ggtool.imatrix)."""

from __future__ import annotations

import json

import click

from . import cli, say
from ..units import human_bytes, parse_size


def _mix_names() -> str:
    from ..plan.llamacpp import MIXES

    return ", ".join(MIXES)


def _quant_rules() -> list[str]:
    from ..plan import RULES

    return [r for r in RULES if r != "plain"]


def _default_rules() -> str:
    from ..plan import DEFAULT_RULES

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
    from ..plan.llamacpp import parse_tensor_type

    return {"overrides": [parse_tensor_type(s) for s in tensor_types],
            "output_type": output_tensor_type, "token_embd_type": token_embedding_type}


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
    from ..convert import convert as do_convert
    from ..store import resolve_model

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
    from ..convert import convert as do_convert
    from ..errors import InputError
    from ..sources import GGUFSource, open_source
    from ..store import resolve_model

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

    from ..errors import InputError
    from ..formats.imatrix import write_gguf
    from ..imatrix import collect

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
