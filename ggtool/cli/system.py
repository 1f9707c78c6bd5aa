"""doctor, demo: what this installation can do, and the main job end to end."""

from __future__ import annotations

import json
import sys

import click

from . import cli, say
from .. import __version__
from ..errors import GgtoolError


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json):
    """Which backends are active: quantizer kernels, llama.cpp build."""
    from .. import quants

    info = {"ggtool": __version__, "python": sys.version.split()[0],
            "native_kernels": sorted(quants.NATIVE_KERNELS),
            "force_numpy": quants.force_numpy(),
            "quant_types": quants.type_names()}
    try:
        from ..llamacpp import llama_cpp, system_info
        info["llama_cpp_python"] = llama_cpp().__version__
        si = system_info()
        info["llama_cpp_system_info"] = si.strip()
        info["amx"] = "AMX_INT8 = 1" in si
        from ..chat.hardware import human, probe

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
    from ..plan.llamacpp import MIXES

    return list(MIXES)


@cli.command()
@click.option("--prompt", default="What is the capital of France?", show_default=True)
@click.option("--quant", "--type", "out_type", default="Q4_K_M", show_default=True,
              type=click.Choice(_mixes(), case_sensitive=False), help="the quant `ggtool pull smollm2-135m` makes")
@click.option("--bench-chunks", default=4, show_default=True, type=click.IntRange(min=0),
              help="chunks of the closing bench (0: no bench)")
def demo(prompt, out_type, bench_chunks):
    """The main job end to end on the default model: ggtool pull smollm2-135m, ggtool run, a short bench."""
    from ..demo import run

    run(say, click.echo, prompt=prompt, out_type=out_type.upper(), bench_chunks=bench_chunks)
