"""The model store: where pulled models live, named NAME:QUANT (Ollama's habit).

    <GGTOOL_HOME or the user data dir>/models/
        smollm2-135m/Q4_K_M/                  folder(name, quant): the one name -> folder mapping
            manifest.json                     written last, atomically: the model is complete
            smollm2-135m-Q4_K_M.gguf          the model (or split parts; or a hard link)
            pull.json                         while a pull is running (gone once manifest.json is)
        org--repo/Q8_0/ ...                   "org/repo:Q8_0"
    <...>/locks/<folder>@<QUANT>.lock         flock: one pull (or rm, cp) of a model at a time

A model without manifest.json is not in the store (`list` never shows it); `prune` removes what a
killed pull left. Source weights stay in the Hugging Face cache; GGUFs pulled ready-made are hard
links to the cache's blobs, never a second copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .errors import CorruptFile, GgtoolError, InputError
from .hub.names import check_name, normalize_quant, split_tag
from .lock import Busy, file_lock

MANIFEST = "manifest.json"
PULLING = "pull.json"
MANIFEST_VERSION = 1


class StoreError(GgtoolError):
    pass


def root() -> Path:
    return paths.models_dir()


def flat(name: str) -> str:
    return check_name(name).replace("/", "--")


def folder(name: str, quant: str) -> Path:
    """The folder of model NAME:QUANT."""
    return root() / flat(name) / normalize_quant(quant)


def lock_path(name: str, quant: str) -> Path:
    return paths.data_dir() / "locks" / f"{flat(name)}@{normalize_quant(quant)}.lock"


def locked(name: str, quant: str, *, blocking: bool = True, on_wait=None):
    return file_lock(lock_path(name, quant), blocking=blocking, on_wait=on_wait)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Stored:
    name: str
    quant: str
    dir: Path
    manifest: dict

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.quant}"

    @property
    def files(self) -> list[Path]:
        """The model's GGUF file(s) (split parts in order); a referenced file stays where it is."""
        out = []
        for f in self.manifest.get("files", []):
            p = Path(f["reference"]) if f.get("reference") else self.dir / f["name"]
            out.append(p)
        return out

    @property
    def path(self) -> Path:
        """What llama.cpp loads: the (first) GGUF file."""
        fs = self.files
        if not fs:
            raise CorruptFile(f"stored model {self.tag} lists no files", hint=f"ggtool rm {self.tag}, then pull it again")
        return fs[0]

    @property
    def size(self) -> int:
        return int(self.manifest.get("size") or sum(f.get("size", 0) for f in self.manifest.get("files", [])))

    def summary(self) -> dict:
        src = self.manifest.get("source", {})
        return {"name": self.name, "quant": self.quant, "tag": self.tag, "size": self.size,
                "modified": self.manifest.get("modified"), "path": str(self.path),
                "source": src.get("repo") or src.get("path") or src.get("kind")}


# --------------------------------------------------------------------------- reading

def _read_manifest(d: Path) -> dict | None:
    try:
        m = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return m if isinstance(m, dict) and m.get("name") and m.get("quant") else None


def entries() -> list[Stored]:
    """Every complete model (manifest written), sorted by name and quant."""
    out = []
    r = root()
    if not r.is_dir():
        return out
    for nd in sorted(r.iterdir()):
        if not nd.is_dir() or nd.name.startswith("."):
            continue
        for qd in sorted(nd.iterdir()):
            m = _read_manifest(qd) if qd.is_dir() else None
            if m:
                out.append(Stored(m["name"], m["quant"], qd, m))
    return out


def get(name: str, quant: str) -> Stored | None:
    d = folder(name, quant)
    m = _read_manifest(d)
    return Stored(m["name"], m["quant"], d, m) if m else None


def find(tag: str) -> list[Stored]:
    """NAME:QUANT -> that model; NAME -> all its quants."""
    name, quant = split_tag(tag)
    check_name(name)
    if quant:
        s = get(name, quant)
        return [s] if s else []
    return [s for s in entries() if s.name == name]


def lookup(tag: str) -> Stored:
    """Exactly one stored model, or an error that says what there is."""
    hits = find(tag)
    if not hits:
        raise StoreError(f"no model {tag!r} in the store",
                         hint=f"`ggtool list` shows the stored models; `ggtool pull {tag}` gets it")
    if len(hits) > 1:
        raise StoreError(f"{tag} is stored in {len(hits)} quants: " + ", ".join(h.quant for h in hits),
                         hint=f"name one, e.g. {hits[0].tag}")
    return hits[0]


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A model file for any command: an existing path as it is, else a stored NAME[:QUANT].

    A string that is neither an existing path nor a stored model comes back unchanged as a Path
    (the command then says the file does not exist), unless it can only be a model name
    (NAME:QUANT, or a bare name without '/' or a suffix): then a store error with a hint."""
    text = os.fspath(name_or_path)
    p = Path(text).expanduser()
    if p.exists():
        return p
    try:
        name, quant = split_tag(text)
        check_name(name)
    except InputError:
        return p
    hits = find(text)
    if hits:
        s = lookup(text)
        if not s.path.exists():
            raise CorruptFile(f"stored model {s.tag} has lost its file {s.path}",
                              hint=f"ggtool rm {s.tag}, then ggtool pull it again")
        return s.path
    if quant or ("/" not in text and not p.suffix):
        raise StoreError(f"{text!r} is neither a file, a folder nor a stored model",
                         hint=f"`ggtool list` shows the stored models; `ggtool pull {text}` gets it")
    return p


# --------------------------------------------------------------------------- writing

def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.incomplete")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def begin(name: str, quant: str, note: dict) -> Path:
    """Create the model's folder for a pull (call with the model's lock held)."""
    d = folder(name, quant)
    d.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(d / PULLING, {"name": name, "quant": normalize_quant(quant), "pid": os.getpid(),
                                     "started": now(), **note})
    return d


def commit(d: Path, manifest: dict) -> Stored:
    """Write manifest.json last (atomically): from here on the model is complete."""
    old = _read_manifest(d)
    manifest = {"manifest_version": MANIFEST_VERSION, **manifest}
    manifest.setdefault("created", (old or {}).get("created") or now())
    manifest["modified"] = now()
    _write_json_atomic(d / MANIFEST, manifest)
    (d / PULLING).unlink(missing_ok=True)
    keep = {MANIFEST} | {f["name"] for f in manifest.get("files", [])}
    for p in d.iterdir():  # files of an older version, partial files of a killed pull (we hold the lock)
        if p.is_file() and p.name not in keep:
            p.unlink(missing_ok=True)
    return Stored(manifest["name"], manifest["quant"], d, manifest)


def file_entry(path: Path, sha256: str | None = None, **extra) -> dict:
    return {"name": path.name, "size": path.stat().st_size, "sha256": sha256 or sha256_file(path), **extra}


def sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def link_or_reference(src: Path, dst: Path) -> str:
    """Put src at dst without a second copy: a hard link, else the caller keeps a reference."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        return "reference"


# --------------------------------------------------------------------------- show

def gguf_summary(files: list[Path]) -> dict:
    """Architecture, parameters, context length, per-tensor type counts, chat template of a GGUF."""
    from .formats.gguf_reader import GGUFFile
    from .plan.llamacpp import MIXES

    counts: Counter = Counter()
    n_params = n_tensors = 0
    kv = {}
    for i, p in enumerate(files):
        g = GGUFFile(p)
        try:
            if i == 0:
                keys = ("general.architecture", "general.name", "general.file_type", "tokenizer.chat_template",
                        "tokenizer.ggml.model")
                kv = {k: g.get(k) for k in keys}
                arch = kv["general.architecture"] or ""
                for k in ("context_length", "embedding_length", "block_count", "attention.head_count",
                          "attention.head_count_kv", "expert_count"):
                    kv[k] = g.get(f"{arch}.{k}")
            for t in g.tensors:
                counts[t.ggml_type.name] += 1
                n = 1
                for d in t.shape:
                    n *= int(d)
                n_params += n
                n_tensors += 1
        finally:
            g.close()
    ftype = kv.get("general.file_type")
    ftype_name = next((m.name for m in MIXES.values() if m.ftype == ftype), None) if ftype is not None else None
    return {
        "architecture": kv.get("general.architecture"), "model_name": kv.get("general.name"),
        "parameters": n_params, "context_length": kv.get("context_length"),
        "embedding_length": kv.get("embedding_length"), "layers": kv.get("block_count"),
        "heads": kv.get("attention.head_count"), "kv_heads": kv.get("attention.head_count_kv"),
        "experts": kv.get("expert_count"), "file_type": ftype_name, "tensors": n_tensors,
        "tensor_types": dict(counts.most_common()), "tokenizer": kv.get("tokenizer.ggml.model"),
        "chat_template": kv.get("tokenizer.chat_template"),
    }


def show(name_or_path: str) -> dict:
    """Everything `ggtool show` prints: a stored model (manifest + GGUF header) or any GGUF file."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        info = gguf_summary([p])
        return {"name": None, "quant": info["file_type"], "path": str(p), "size": p.stat().st_size,
                "source": None, **info}
    s = lookup(name_or_path)
    missing = [str(f) for f in s.files if not f.exists()]
    if missing:
        raise CorruptFile(f"stored model {s.tag} has lost {missing[0]}", hint=f"ggtool rm {s.tag}, then pull it again")
    info = gguf_summary(s.files)
    m = s.manifest
    return {"name": s.name, "quant": s.quant, "tag": s.tag, "path": str(s.path), "size": s.size,
            "source": m.get("source"), "rules": m.get("rules"), "created": m.get("created"),
            "modified": m.get("modified"), "files": m.get("files"), **info}


# --------------------------------------------------------------------------- rm, cp

def _freed(d: Path) -> int:
    """Bytes deleting d gives back (hard links shared with the HF cache free nothing)."""
    n = 0
    for p in d.rglob("*"):
        try:
            st = p.lstat()
        except OSError:
            continue
        if p.is_file() and not p.is_symlink() and st.st_nlink == 1:
            n += st.st_size
    return n


def _remove_dir(d: Path) -> None:
    trash = d.with_name(f".trash-{d.name}-{secrets.token_hex(4)}")
    os.replace(d, trash)  # gone from `list` at once, whatever happens next
    shutil.rmtree(trash, ignore_errors=True)
    try:
        d.parent.rmdir()  # the name's folder, once its last quant is gone
    except OSError:
        pass


def rm(tags: list[str]) -> list[dict]:
    """Remove NAME:QUANT (or every quant of NAME). All names are checked before anything goes."""
    targets = []
    for tag in tags:
        hits = find(tag)
        if not hits:
            raise StoreError(f"no model {tag!r} in the store", hint="`ggtool list` shows the stored models")
        targets += [h for h in hits if h.tag not in {t.tag for t in targets}]
    removed = []
    for s in targets:
        try:
            with locked(s.name, s.quant, blocking=False):
                freed = _freed(s.dir)
                _remove_dir(s.dir)
        except Busy:
            raise StoreError(f"{s.tag} is being pulled or copied right now",
                             hint="wait for that to finish, then remove it") from None
        removed.append({"tag": s.tag, "path": str(s.dir), "size": s.size, "freed": freed})
    return removed


def cp(src: str, dst: str) -> Stored:
    """A second name for a stored model: hard links, a new manifest (no second copy)."""
    s = lookup(src)
    name, quant = split_tag(dst)
    check_name(name)
    quant = quant or s.quant
    if get(name, quant):
        raise StoreError(f"{name}:{quant} already exists", hint=f"remove it first: ggtool rm {name}:{quant}")
    try:
        with locked(name, quant, blocking=False):
            return _copy(s, name, quant)
    except Busy:
        raise StoreError(f"{name}:{quant} is being pulled right now", hint="wait for that pull to finish") from None


def _copy(s: Stored, name: str, quant: str) -> Stored:
    d = begin(name, quant, {"copy_of": s.tag})
    files = []
    for f, p in zip(s.manifest.get("files", []), s.files):
        entry = dict(f)
        if not f.get("reference"):
            how = link_or_reference(p, d / f["name"])
            if how == "reference":
                shutil.copy2(p, d / f["name"])  # another file system: a copy is the only way
                how = "copy"
            entry["link"] = how
        files.append(entry)
    m = {**s.manifest, "name": name, "quant": quant, "files": files, "copied_from": s.tag, "created": now()}
    return commit(d, m)


# --------------------------------------------------------------------------- prune

def _size(p: Path) -> int:
    if p.is_dir() and not p.is_symlink():
        return sum(_size(c) for c in p.iterdir())
    try:
        st = p.lstat()
    except OSError:
        return 0
    return st.st_size if p.is_file() and not p.is_symlink() and st.st_nlink == 1 else 0


def _prunable_store() -> list[tuple[str, Path, Path]]:
    """(kind, path, lock) in the store: killed pulls, stray partial outputs, half-removed folders."""
    out = []
    r = root()
    if not r.is_dir():
        return out
    for nd in sorted(r.iterdir()):
        if nd.name.startswith(".trash-"):
            out.append(("removed model", nd, None))
            continue
        if not nd.is_dir():
            continue
        for qd in sorted(nd.iterdir()):
            if qd.name.startswith(".trash-"):
                out.append(("removed model", qd, None))
                continue
            if not qd.is_dir():
                continue
            m = _read_manifest(qd)
            try:
                lk = lock_path(m["name"], m["quant"]) if m else None
                if lk is None and (qd / PULLING).exists():
                    note = json.loads((qd / PULLING).read_text())
                    lk = lock_path(note["name"], note["quant"])
            except (InputError, OSError, ValueError, KeyError, TypeError):
                lk = None
            if m is None and (qd / PULLING).exists():
                out.append(("incomplete pull", qd, lk))
            elif m is not None:
                out += [("partial output", p, lk) for p in qd.iterdir() if p.name.endswith(".incomplete")]
    return out


def _prunable_hf_cache(referenced: set[str]) -> list[tuple[str, Path, Path]]:
    from .hub import cache as hf

    out = []
    for repo_dir in hf.repos_in_cache():
        blobs = repo_dir / "blobs"
        if not blobs.is_dir():
            continue
        linked = hf.referenced_blobs(repo_dir)
        locks = hf.hub_cache_dir() / ".locks" / repo_dir.name
        for b in sorted(blobs.iterdir()):
            etag = b.name.split(".")[0]
            if b.name.endswith(hf.PARTIAL_SUFFIX):
                out.append(("partial download", b, locks / f"{etag}.lock"))
            elif b.name not in linked and b.name not in referenced and hf.ETAG_RE.match(b.name):
                out.append(("orphaned blob", b, locks / f"{etag}.lock"))
    return out


def prune(dry_run: bool = False) -> dict:
    """Remove what killed pulls left (partial downloads, incomplete models) and orphaned blobs in
    the Hugging Face cache (no snapshot and no stored model points to them). Anything a running
    pull holds (its lock) is left alone."""
    from .hub import cache as hf

    referenced = {f.get("sha256") for s in entries() for f in s.manifest.get("files", [])}
    referenced |= {f.get("sha256") for s in entries() for f in s.manifest.get("source_files", [])}
    items = []
    for kind, p, lk in _prunable_store() + _prunable_hf_cache(referenced):
        n = _size(p)
        if dry_run:
            if lk is None or not _held(lk):
                items.append({"kind": kind, "path": str(p), "bytes": n})
            continue
        try:
            with (file_lock(lk, blocking=False) if lk is not None else contextlib.nullcontext()):
                if kind == "orphaned blob" and p.name in hf.referenced_blobs(p.parent.parent):
                    continue  # linked since we looked
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        except Busy:
            continue
        except FileNotFoundError:
            continue
        items.append({"kind": kind, "path": str(p), "bytes": n})
        if kind in ("incomplete pull", "removed model"):
            try:
                p.parent.rmdir()
            except OSError:
                pass
    return {"dry_run": dry_run, "items": items, "freed": sum(i["bytes"] for i in items)}


def _held(lk: Path) -> bool:
    from .lock import is_locked

    return is_locked(lk)
