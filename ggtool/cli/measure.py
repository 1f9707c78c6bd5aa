"""bench, compare: what each quantization level costs in quality and speed."""

from __future__ import annotations

import json

import click

from . import cli, say


def _bench_defaults():
    from ..bench import DEFAULT_CHUNKS, DEFAULT_FIT_CTX, DEFAULT_MAX_KLD, DEFAULT_QUANTS

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
@click.option("--rules", default=None, type=click.Choice(["sensitivity", "llama.cpp"]),
              help="how ggtool places bits within each level [default: sensitivity, as --quant does]")
@click.option("--fresh", is_flag=True, help="measure every row again (quantized files and log-probs stay cached)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON on stdout")
@click.option("--csv", "as_csv", is_flag=True, help="print the rows as CSV on stdout")
@click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False),
              help="write a PNG: size vs KLD and size vs tg t/s (needs matplotlib: pip install 'ggtool[plot]')")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars")
def bench(model, quants, text_path, chunks, ctx, threads, reps, against, max_kld, fit_ctx, gpu_layers, rules,
          fresh, as_json, as_csv, plot_path, quiet):
    """Size, quality (perplexity, KLD vs the base) and speed of every quantization level.

    MODEL is a Hugging Face checkpoint folder or an F32/F16/BF16 GGUF (the base every level is
    measured against). A second run reuses the cache and resumes where one stopped.
    """
    from .. import benchreport
    from ..bench import bench as run_bench

    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    if plot_path:
        benchreport.require_matplotlib()
    res = run_bench(model, [q for q in quants.split(",") if q.strip()], text_path=text_path, chunks=chunks,
                    ctx=ctx, threads=threads, reps=reps, against=against, max_kld=max_kld, fit_ctx=fit_ctx,
                    n_gpu_layers=gpu_layers, fresh=fresh, progress=not quiet, log=say, rules=rules)
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

    from ..compare import compare as run_compare, side_by_side

    res = run_compare(model_a, model_b, prompts, max_tokens=max_tokens, chunks=chunks, ctx=ctx,
                      text_path=text_path, threads=threads, progress=not quiet, log=say)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
    else:
        click.echo(side_by_side(res, width=shutil.get_terminal_size((100, 24)).columns))
