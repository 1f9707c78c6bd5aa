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


def quant_options(f):
    """Options shared by `convert --quant` and `quantize`."""
    opts = [
        click.option("--rules", default="llama.cpp", show_default=True, type=click.Choice(_quant_rules()),
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
    from .plan.llamacpp import parse_tensor_type

    return {"overrides": [parse_tensor_type(s) for s in tensor_types],
            "output_type": output_tensor_type, "token_embd_type": token_embedding_type}


def report(res, as_json: bool) -> None:
    counts = res.plan.type_counts()
    summary = {
        "output": str(res.path), "mix": res.mix, "rules": res.plan.rules, "tensors": res.n_tensors,
        "bytes": res.nbytes, "params": res.n_params, "bits_per_weight": round(res.bits_per_weight, 3),
        "seconds": round(res.seconds, 2), "tensor_types": dict(counts),
        "warnings": res.warnings, "notes": res.notes,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    kinds = ", ".join(f"{n} {t}" for t, n in counts.most_common())
    say(f"wrote {res.path}: {res.n_tensors} tensors ({kinds}), {human_bytes(res.nbytes)}, "
        f"{res.bits_per_weight:.2f} bits/weight, {res.seconds:.1f} s")
    for note in res.notes:
        say(f"note: {note}")


@cli.command()
@click.argument("src", type=click.Path(path_type=str))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=str), help="output .gguf file")
@click.option("--type", "out_type", default=None,
              type=click.Choice(["F32", "F16", "BF16", "Q8_0"], case_sensitive=False),
              help="one type for every matrix (norms and biases stay F32) [default: F16]")
@click.option("--quant", default=None, metavar="MIX",
              help="quantize in the same pass: " + _mix_names())
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
    if source.is_quantized and not allow_requantize:
        source.close()
        raise InputError(f"{src} is already quantized", hint="quantize from an F32/F16/BF16 GGUF, or pass --allow-requantize")
    res = do_convert(src, out, quant, rules=rules, threads=threads, progress=not quiet, log=say, source=source,
                     **mix_opts(tensor_types, output_tensor_type, token_embedding_type))
    report(res, as_json)


@cli.command()
@click.argument("model", type=click.Path(path_type=str))
@click.argument("prompt")
@click.option("-n", "--max-tokens", default=48, show_default=True, type=click.IntRange(min=1))
@click.option("--gpu-layers", default=0, show_default=True, type=click.IntRange(min=-1),
              help="layers to offload to the GPU (-1 = all)")
def generate(model, prompt, max_tokens, gpu_layers):
    """Greedy text continuation of PROMPT with llama.cpp (streams to stdout)."""
    from .llamacpp.runtime import Model

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
