"""pull, list, show, rm, cp, prune, quants: the model store (thin commands over ggtool.store and ggtool.hub)."""

from __future__ import annotations

import json

import click

from . import cli, say
from ..units import human_bytes


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
    from ..hub import catalog
    from ..hub.pull import describe, plan, run

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
    from .. import store

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
    from ..plan.allocate import show_tensors

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
    from .. import store

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
    from .. import store

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
    from .. import store

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
    from .. import store

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
    from ..hub.ggufs import available

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
