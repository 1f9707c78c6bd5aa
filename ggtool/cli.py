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

ENV_HELP = "\b\nEnvironment variables:\n" + "\n".join(f"  {k:<20} {v}" for k, v in ENV_VARS.items())


def say(msg: str) -> None:
    """Talk to the user (stderr)."""
    click.echo(msg, err=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@click.group(epilog=ENV_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ggtool")
def cli():
    """ggtool: get a model onto your machine as a GGUF at the size you can afford."""


def quant_options(f):
    """Options shared by `convert --quant` and `quantize`."""
    opts = [
        click.option("--rules", default="llama.cpp", show_default=True, type=click.Choice(["llama.cpp"]),
                     help="how each tensor's type is chosen within the mix"),
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
    from .mixes import parse_tensor_type

    return {"overrides": [parse_tensor_type(s) for s in tensor_types],
            "output_type": output_tensor_type, "token_embd_type": token_embedding_type}


def report(res, as_json: bool) -> None:
    from collections import Counter

    summary = {
        "output": str(res.path), "mix": res.mix, "tensors": res.n_tensors, "bytes": res.nbytes,
        "params": res.n_params, "bits_per_weight": round(res.bits_per_weight, 3),
        "seconds": round(res.seconds, 2), "tensor_types": dict(Counter(res.types.values())),
        "warnings": res.warnings,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    kinds = ", ".join(f"{n} {t}" for t, n in Counter(res.types.values()).most_common())
    say(f"wrote {res.path}: {res.n_tensors} tensors ({kinds}), {human_bytes(res.nbytes)}, "
        f"{res.bits_per_weight:.2f} bits/weight, {res.seconds:.1f} s")


@cli.command()
@click.argument("src", type=click.Path(path_type=str))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=str), help="output .gguf file")
@click.option("--type", "out_type", default=None,
              type=click.Choice(["F32", "F16", "BF16", "Q8_0"], case_sensitive=False),
              help="one type for every matrix (norms and biases stay F32) [default: F16]")
@click.option("--quant", default=None, metavar="MIX",
              help="quantize in the same pass: Q2_K, Q3_K_S/M/L, Q4_K_S/M, Q5_K_S/M, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16, F32")
@quant_options
def convert(src, out, out_type, quant, rules, tensor_types, output_tensor_type, token_embedding_type,
            threads, as_json, quiet):
    """Convert a Hugging Face checkpoint folder (or a GGUF) to GGUF.

    With --quant, safetensors go straight to the quantized GGUF: no F16 file in between.
    """
    from .convert import convert as do_convert

    if out_type and quant:
        raise click.UsageError("give --type or --quant, not both")
    if quant:
        res = do_convert(src, out, quant, rules=rules, threads=threads, progress=not quiet, log=say,
                         **mix_opts(tensor_types, output_tensor_type, token_embedding_type))
    else:
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
def quantize(src, out, quant, allow_requantize, rules, tensor_types, output_tensor_type, token_embedding_type,
             threads, as_json, quiet):
    """Quantize an F32/F16/BF16 GGUF (as llama-quantize does)."""
    from .convert import convert as do_convert
    from .errors import InputError
    from .sources import GGUFSource, open_source

    source = open_source(src)
    if not isinstance(source, GGUFSource):
        source.close()
        raise InputError(f"{src} is not a GGUF file", hint=f"for a checkpoint folder use: ggtool convert {src} -o {out} --quant {quant}")
    if source.warnings and not allow_requantize:
        raise InputError(f"{src} is already quantized", hint="quantize from an F32/F16/BF16 GGUF, or pass --allow-requantize")
    res = do_convert(src, out, quant, rules=rules, threads=threads, progress=not quiet, log=say, source=source,
                     **mix_opts(tensor_types, output_tensor_type, token_embedding_type))
    report(res, as_json)


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("prompt")
@click.option("-n", "--max-tokens", default=48, show_default=True)
@click.option("--gpu-layers", default=0, show_default=True, help="layers to offload to the GPU (-1 = all)")
def generate(model, prompt, max_tokens, gpu_layers):
    """Greedy text continuation of PROMPT with llama.cpp (streams to stdout)."""
    from .llamacpp import Model

    m = Model(model, n_ctx=max(512, max_tokens + 256), logits_all=False, n_gpu_layers=gpu_layers)
    click.echo(prompt, nl=False)
    m.generate(prompt, max_tokens=max_tokens, stream=lambda s: click.echo(s, nl=False))
    click.echo()


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
    except GgtoolError as e:
        info["llama_cpp_python"] = None
        info["llama_cpp_error"] = e.message
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for k, v in info.items():
        click.echo(f"{k:<22} {', '.join(v) if isinstance(v, list) else v}")


@cli.command()
@click.option("--prompt", default="The capital of France is", show_default=True)
@click.option("--type", "out_type", default="Q8_0", show_default=True,
              type=click.Choice(["F32", "F16", "BF16", "Q8_0"], case_sensitive=False))
def demo(prompt, out_type):
    """The main job end to end on the default model (smollm2-135m)."""
    from .demo import run

    run(say, click.echo, prompt=prompt, out_type=out_type.upper())


def main(argv=None) -> None:
    """Entry point: run the CLI, turn GgtoolErrors into 'Error:/Hint:' lines and exit 1."""
    try:
        cli.main(args=argv, prog_name="ggtool", standalone_mode=False)
    except GgtoolError as e:
        if os.environ.get("GGTOOL_DEBUG"):
            raise
        click.echo(format_error(e), err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("Interrupted; nothing half-written was left behind.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("\nInterrupted; nothing half-written was left behind.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
