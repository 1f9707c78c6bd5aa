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


@cli.command()
@click.argument("src", type=click.Path(path_type=str))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=str), help="output .gguf file")
@click.option("--type", "out_type", default="F16", show_default=True,
              type=click.Choice(["F32", "F16", "BF16", "Q8_0"], case_sensitive=False),
              help="tensor type for the weights (norms and biases stay F32)")
@click.option("--threads", type=int, default=None, help="quantizer threads (default: all cores)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON on stdout")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def convert(src, out, out_type, threads, as_json, quiet):
    """Convert a Hugging Face checkpoint folder (or a GGUF) to GGUF."""
    from .convert import convert as do_convert

    res = do_convert(src, out, out_type.upper(), threads=threads, progress=not quiet, log=say)
    summary = {
        "output": str(res.path), "type": res.mix, "tensors": res.n_tensors, "bytes": res.nbytes,
        "params": res.n_params, "bits_per_weight": round(res.bits_per_weight, 3),
        "seconds": round(res.seconds, 2), "warnings": res.warnings,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        say(f"wrote {res.path}: {res.n_tensors} tensors, {human_bytes(res.nbytes)}, "
            f"{res.bits_per_weight:.2f} bits/weight, {res.seconds:.1f} s")


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
