"""The Hugging Face cache layout, shared with every other HF tool (source weights live once).

    <HF_HUB_CACHE>/models--org--name/
        blobs/<etag>                    the file's bytes; etag = LFS sha256, or the git blob sha1
        blobs/<etag>.incomplete         ggtool's partial download (a stable name: resumable)
        snapshots/<commit>/<path>       relative symlink -> ../../blobs/<etag>
        refs/<revision>                 the commit a branch/tag pointed to
    <HF_HUB_CACHE>/.locks/models--org--name/<etag>.lock    (huggingface_hub locks the same file)

HF_HUB_CACHE, HF_HOME and XDG_CACHE_HOME are read at call time, so tests and subprocesses can
move the cache.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path, PurePosixPath

from ..errors import InputError

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
ETAG_RE = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
PARTIAL_SUFFIX = ".incomplete"


def hub_cache_dir() -> Path:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


class UnsafeFileName(InputError):
    hint = "the server listed a file name that would escape the cache; nothing was written"


def _short(v, n: int = 80) -> str:
    """repr(v) cut to n characters: what a broken server sent may be a megabyte long."""
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def safe_relpath(name: str) -> PurePosixPath:
    """A repo file name as a relative path, refusing anything that could escape its folder."""
    bad = (not name or "\\" in name or "\x00" in name or name.startswith("/")
           or re.match(r"^[A-Za-z]:", name) is not None)
    parts = name.split("/")
    if bad or any(p in ("", ".", "..") for p in parts):
        raise UnsafeFileName(f"refusing file name {_short(name)} from the server: it escapes the model folder")
    if len(name.encode("utf-8", "surrogatepass")) > 1024 or any(len(p.encode("utf-8", "surrogatepass")) > 255 for p in parts):
        raise UnsafeFileName(f"refusing file name {_short(name)} from the server: longer than a file system "
                             "takes (255 bytes a name, 1024 a path)",
                             hint="the server's file list is damaged; nothing was written")
    return PurePosixPath(*parts)


def folder_name(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


class RepoCache:
    """One repo's folder in the HF cache."""

    def __init__(self, repo: str, root: Path | None = None):
        self.repo = repo
        self.root = Path(root) if root else hub_cache_dir()
        self.folder = self.root / folder_name(repo)

    def blob(self, etag: str) -> Path:
        if not ETAG_RE.match(etag):
            raise UnsafeFileName(f"refusing etag {_short(etag)} from the server: not a sha1/sha256 hex digest",
                                 hint="the server does not speak the Hub protocol (or is broken)")
        return self.folder / "blobs" / etag

    def partial(self, etag: str) -> Path:
        b = self.blob(etag)
        return b.with_name(b.name + PARTIAL_SUFFIX)

    def lock_path(self, etag: str) -> Path:
        return self.root / ".locks" / folder_name(self.repo) / f"{etag}.lock"

    def snapshot(self, commit: str) -> Path:
        if not COMMIT_RE.match(commit):
            raise UnsafeFileName(f"refusing commit id {_short(commit)} from the server",
                                 hint="the server does not speak the Hub protocol (or is broken)")
        return self.folder / "snapshots" / commit

    def pointer(self, commit: str, name: str) -> Path:
        snap = self.snapshot(commit)
        p = snap.joinpath(*safe_relpath(name).parts)
        if Path(os.path.abspath(snap)) not in Path(os.path.abspath(p)).parents:  # no symlinks resolved
            raise UnsafeFileName(f"refusing file name {_short(name)}: it lands outside {snap}")
        return p

    def read_ref(self, revision: str) -> str | None:
        if COMMIT_RE.match(revision):
            return revision
        p = self.folder / "refs" / revision
        try:
            c = p.read_text().strip()
        except OSError:
            return None
        return c if COMMIT_RE.match(c) else None

    def write_ref(self, revision: str, commit: str) -> None:
        if revision == commit:
            return
        p = self.folder / "refs" / safe_relpath(revision)
        if p.is_file() and p.read_text().strip() == commit:
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(commit)
        os.replace(tmp, p)

    def link(self, commit: str, name: str, etag: str) -> Path:
        """snapshots/<commit>/<name> -> blobs/<etag> (relative symlink, as huggingface_hub)."""
        ptr, blob = self.pointer(commit, name), self.blob(etag)
        ptr.parent.mkdir(parents=True, exist_ok=True)
        if ptr.is_symlink() or ptr.exists():
            if ptr.resolve() == blob.resolve():
                return ptr
            ptr.unlink()
        tmp = ptr.with_name(f".{ptr.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            os.symlink(os.path.relpath(blob, ptr.parent), tmp)
        except OSError:  # no symlinks here (some Windows set-ups): a hard link, never a copy
            os.link(blob, tmp)
        os.replace(tmp, ptr)
        return ptr

    def cached_file(self, commit: str, name: str) -> Path | None:
        """The snapshot file if it is there and its blob exists."""
        try:
            p = self.pointer(commit, name)
        except UnsafeFileName:
            return None
        return p if p.exists() else None


def repos_in_cache(root: Path | None = None) -> list[Path]:
    root = Path(root) if root else hub_cache_dir()
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("models--"))
    except OSError:
        return []


def referenced_blobs(repo_folder: Path) -> set[str]:
    """Blob names some snapshot of this repo points to."""
    refs = set()
    snaps = repo_folder / "snapshots"
    if not snaps.is_dir():
        return refs
    for dirpath, dirnames, filenames in os.walk(snaps):
        for f in filenames + dirnames:
            p = Path(dirpath) / f
            if p.is_symlink():
                refs.add(Path(os.readlink(p)).name)
    return refs
