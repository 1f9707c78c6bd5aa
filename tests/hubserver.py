"""A local HTTP server that speaks the Hugging Face Hub protocol huggingface_hub uses, for tests.

    server = HubServer().start()               # 127.0.0.1, a free port
    server.add(Repo("test/tiny", {"config.json": b"...", "model.safetensors": b"..."}))
    env HF_ENDPOINT=server.url  ->  HfApi / ggtool talk to it; the real Hub is never contacted

Routes (as the Hub):
    GET  /api/models/{repo}[/revision/{rev}]                   model info: id, sha (commit), gated
    GET  /api/models/{repo}/tree/{rev}[/{path}]?recursive=...  files: oid (git blob id), size,
                                                               lfs {oid: sha256, size, pointerSize}
    GET|HEAD /{repo}/resolve/{rev}/{path}     small files: 200 + ETag (git blob id), X-Repo-Commit;
                                              LFS files: 302 -> http://localhost:PORT/lfs/... (a
                                              "CDN" on another host name) + X-Linked-Etag (sha256),
                                              X-Linked-Size, X-Repo-Commit
    GET|HEAD /lfs/{repo}/{path}               the LFS bytes (a CDN), Range requests (206/416)
Errors carry X-Error-Code (RepoNotFound, GatedRepo, RevisionNotFound, EntryNotFound) as the Hub does.

Faults, per (repo, path): corrupt one byte, drop the connection mid-file, stall mid-file,
throttle to N bytes/s; per repo: answer 401/403/404. `served[(repo, path)]` counts body bytes sent.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt")
CHUNK = 16 * 1024


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    tokens: set[str] = field(default_factory=set)   # tokens granted access to a gated repo
    commit: str = ""

    def __post_init__(self):
        if not self.commit:
            h = hashlib.sha1(self.repo_id.encode())
            for name in sorted(self.files):
                h.update(name.encode() + hashlib.sha256(self.files[name]).digest())
            self.commit = h.hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.files[path]).hexdigest()

    def pointer(self, path: str) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256(path)}\n"
                f"size {len(self.files[path])}\n").encode()

    def oid(self, path: str) -> str:
        return git_blob_id(self.pointer(path) if self.is_lfs(path) else self.files[path])

    def tree(self, prefix: str = "", recursive: bool = False) -> list[dict]:
        out, dirs = [], set()
        for path in sorted(self.files):
            if prefix and not path.startswith(prefix.rstrip("/") + "/"):
                continue
            rest = path[len(prefix.rstrip("/")) + 1:] if prefix else path
            if "/" in rest and not recursive:
                dirs.add((prefix.rstrip("/") + "/" if prefix else "") + rest.split("/")[0])
                continue
            for i in range(rest.count("/")):
                dirs.add((prefix.rstrip("/") + "/" if prefix else "") + "/".join(rest.split("/")[:i + 1]))
            e = {"type": "file", "oid": self.oid(path), "size": len(self.files[path]), "path": path}
            if self.is_lfs(path):
                e["lfs"] = {"oid": self.sha256(path), "size": len(self.files[path]), "pointerSize": len(self.pointer(path))}
            out.append(e)
        return [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(dirs)] + out


def repo_from_folder(repo_id: str, folder: Path, **kw) -> Repo:
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}
    return Repo(repo_id, files, **kw)


class HubServer:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.served: Counter = Counter()          # (repo, path) -> body bytes sent
        self.requests: list[tuple[str, str, str | None]] = []   # (method, path, Range)
        self.authorized: list[str] = []           # paths of requests that carried an Authorization header
        self.corrupt: set[tuple[str, str]] = set()
        self.drop: Counter = Counter()            # (repo, path) -> connections to drop mid-file
        self.stall: Counter = Counter()           # (repo, path) -> responses to stall mid-file
        self.stall_seconds = 3.0
        self.throttle: dict[tuple[str, str], float] = {}   # bytes per second
        self.status: dict[str, int] = {}          # repo -> forced HTTP status (401, 403, 404)
        self.extra_tree: dict[str, list[dict]] = {}  # repo -> entries added to the tree (e.g. '../x')
        self.lock = threading.Lock()
        self._httpd = None

    # ------------------------------------------------------------------ control
    def add(self, repo: Repo) -> Repo:
        self.repos[repo.repo_id] = repo
        return repo

    def start(self) -> "HubServer":
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def served_bytes(self, repo: str, path: str) -> int:
        with self.lock:
            return self.served[(repo, path)]

    def resolve_requests(self) -> int:
        return sum(1 for m, p, _ in self.requests if "/resolve/" in p or p.startswith("/lfs/"))


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # quiet
        pass

    # ------------------------------------------------------------------ helpers
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, ctype: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str):
        self._send(status, json.dumps({"error": message}).encode(), {"X-Error-Code": code, "X-Error-Message": message})

    def _find_repo(self, parts: list[str]) -> tuple[Repo | None, list[str]]:
        if len(parts) >= 2:
            r = self.hub.repos.get(f"{parts[0]}/{parts[1]}")
            return r, parts[2:]
        return None, []

    def _check_access(self, repo: Repo | None, repo_id: str) -> bool:
        forced = self.hub.status.get(repo_id)
        if forced in (401, 403):
            self._error(forced, "GatedRepo", f"Access to model {repo_id} is restricted.")
            return False
        if repo is None or forced == 404:
            self._error(404 if forced == 404 else 401, "RepoNotFound", "Repository not found")
            return False
        if repo.gated:
            auth = self.headers.get("Authorization", "")
            tok = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
            if tok is None:
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must be authenticated.")
                return False
            if tok not in repo.tokens:
                self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the authorized list.")
                return False
        return True

    def _rev_ok(self, repo: Repo, rev: str) -> bool:
        if unquote(rev) in ("main", repo.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return False

    # ------------------------------------------------------------------ routes
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        u = urlsplit(self.path)
        with self.hub.lock:
            self.hub.requests.append((self.command, u.path, self.headers.get("Range")))
            if self.headers.get("Authorization"):
                self.hub.authorized.append(u.path)
        parts = [unquote(p) for p in u.path.split("/") if p]
        if parts[:2] == ["api", "models"]:
            return self._api(parts[2:], parse_qs(u.query))
        if parts[:1] == ["lfs"]:
            return self._lfs(parts[1:])
        repo, rest = self._find_repo(parts)
        if len(rest) >= 3 and rest[0] == "resolve":
            repo_id = f"{parts[0]}/{parts[1]}"
            if not self._check_access(repo, repo_id) or not self._rev_ok(repo, rest[1]):
                return
            return self._resolve(repo, "/".join(rest[2:]))
        self._error(404, "EntryNotFound", "not found")

    def _api(self, parts: list[str], query: dict):
        repo, rest = self._find_repo(parts)
        repo_id = "/".join(parts[:2])
        forced = self.hub.status.get(repo_id)
        if forced in (401, 403):
            return self._error(forced, "GatedRepo", f"Access to model {repo_id} is restricted.")
        if repo is None or forced == 404:
            return self._error(401 if forced != 404 else 404, "RepoNotFound", "Repository not found")
        if not rest or rest[0] == "revision":
            if rest and not self._rev_ok(repo, rest[1]):
                return
            info = {"_id": "x", "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "private": False,
                    "gated": "manual" if repo.gated else False, "disabled": False, "tags": [],
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                    "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z"}
            return self._send(200, json.dumps(info).encode())
        if rest[0] == "tree" and len(rest) >= 2:
            if not self._rev_ok(repo, rest[1]):
                return
            recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
            entries = repo.tree("/".join(rest[2:]), recursive) + self.hub.extra_tree.get(repo_id, [])
            return self._send(200, json.dumps(entries).encode())
        self._error(404, "EntryNotFound", "not found")

    def _resolve(self, repo: Repo, path: str):
        if path not in repo.files:
            return self._error(404, "EntryNotFound", f"{path} does not exist at this revision")
        data = repo.files[path]
        common = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if repo.is_lfs(path):
            # the bytes come from "another host" (localhost vs 127.0.0.1), as from the Hub's CDN:
            # huggingface_hub reads X-Linked-* from this 302 and does not follow it for metadata
            port = self.server.server_address[1]
            loc = f"http://localhost:{port}/lfs/{repo.repo_id}/{quote(path)}"
            return self._send(302, b"", {**common, "Location": loc, "ETag": f'"{repo.oid(path)}"',
                                         "X-Linked-Etag": f'"{repo.sha256(path)}"', "X-Linked-Size": str(len(data))})
        self._body(repo.repo_id, path, data, {**common, "ETag": f'"{repo.oid(path)}"'})

    def _lfs(self, parts: list[str]):
        repo, rest = self._find_repo(parts)
        path = "/".join(rest)
        if repo is None or path not in repo.files:
            return self._error(404, "EntryNotFound", "no such object")
        self._body(repo.repo_id, path, repo.files[path], {"ETag": f'"{repo.sha256(path)}"', "Accept-Ranges": "bytes"})

    def _body(self, repo_id: str, path: str, data: bytes, headers: dict):
        hub, key, size = self.hub, (repo_id, path), len(data)
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        status = 200
        if rng and rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].partition("-")
            start = int(a) if a else 0
            end = min(int(b), size - 1) if b else size - 1
            if start >= size:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        with hub.lock:
            drop = hub.drop[key] > 0
            stall = hub.stall[key] > 0
            if drop:
                hub.drop[key] -= 1
            if stall:
                hub.stall[key] -= 1
        rate = hub.throttle.get(key)
        mid = size // 2
        pos = start
        try:
            while pos <= end:
                n = min(CHUNK, end + 1 - pos)
                if (drop or stall) and pos < mid <= pos + n:
                    n = max(mid - pos, 1)
                chunk = bytearray(data[pos:pos + n])
                if key in hub.corrupt and pos <= mid < pos + n:
                    chunk[mid - pos] ^= 0xFF
                if (drop or stall) and pos >= mid:
                    if drop:
                        self.close_connection = True
                        return  # the connection closes with bytes missing
                    time.sleep(hub.stall_seconds)
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                self.wfile.flush()
                with hub.lock:
                    hub.served[key] += len(chunk)
                pos += n
                if rate:
                    time.sleep(len(chunk) / rate)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


# --------------------------------------------------------------------------- pytest fixtures
# Test modules import these: `from tests.hubserver import hub, hub_env, ...  # noqa: F401`

import os  # noqa: E402

import pytest  # noqa: E402

TEST_CATALOG = {"models": {
    "tiny": {"repo": "test/tiny-llama", "architecture": "LlamaForCausalLM", "params": "1M",
             "gguf": ["test/tiny-GGUF"], "description": "a tiny test llama"},
    "tiny-new": {"repo": "test/tiny-future", "architecture": "FutureForCausalLM", "params": "1M",
                 "gguf": ["test/tiny-GGUF"], "description": "an architecture ggtool cannot convert"},
}}


def checkpoint_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    from tests import tinymodels as tm

    return tm.make_checkpoint(tmp_path_factory.mktemp("hubck") / "tiny", "llama", hidden=64, layers=2, heads=4,
                              kv_heads=2, dtype="float16")


@pytest.fixture(scope="session")
def tiny_files(tiny_ckpt) -> dict[str, bytes]:
    """A safetensors repo, with what pull must never download beside it."""
    files = checkpoint_files(tiny_ckpt)
    files["README.md"] = b"# tiny\n"
    files["pytorch_model.bin"] = b"\x80\x02 not really a pickle"
    files["modeling_tiny.py"] = b"raise SystemExit('repo code must never run')\n"
    files["onnx/model.onnx"] = b"onnx"
    return files


@pytest.fixture(scope="session")
def sharded_files(tmp_path_factory) -> dict[str, bytes]:
    from tests import tinymodels as tm

    ck = tm.make_checkpoint(tmp_path_factory.mktemp("hubck") / "sharded", "qwen2", hidden=64, layers=2, heads=4,
                            kv_heads=2, dtype="bfloat16", shards=2)
    files = checkpoint_files(ck)
    files["consolidated.safetensors"] = b"not listed in the index: never downloaded"
    return files


@pytest.fixture(scope="session")
def big_files(tmp_path_factory) -> dict[str, bytes]:
    """A bigger safetensors repo (~1.5 MB of weights), for the throttled kill/resume tests."""
    from tests import tinymodels as tm

    ck = tm.make_checkpoint(tmp_path_factory.mktemp("hubck") / "big", "llama", hidden=128, layers=2, heads=4,
                            kv_heads=2, dtype="float32", intermediate=384)
    return checkpoint_files(ck)


def split_gguf(src: Path, out_prefix: Path, parts: int) -> list[Path]:
    """gguf-py's writer splits `src` into <prefix>-0000i-of-0000n.gguf parts (as llama.cpp's gguf-split)."""
    import gguf

    r = gguf.GGUFReader(str(src))
    arch = r.fields["general.architecture"].contents()
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out_prefix) + ".gguf", arch, split_max_tensors=-(-len(r.tensors) // parts))
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vt = f.types[0]
        sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), vt, sub_type=sub)
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sorted(out_prefix.parent.glob(out_prefix.name + "-*-of-*.gguf"))


@pytest.fixture(scope="session")
def gguf_files(tiny_ckpt, tmp_path_factory) -> dict[str, bytes]:
    """A GGUF repo made by ggtool from the tiny checkpoint: Q8_0, Q4_K_M, and Q5_0 split in two."""
    from ggtool.convert import convert

    d = tmp_path_factory.mktemp("hubgguf")
    files = {"README.md": b"# tiny GGUF\n"}
    for q in ("Q8_0", "Q4_K_M", "Q5_0"):
        out = d / f"Tiny-{q}.gguf"
        convert(tiny_ckpt, out, q, rules="llama.cpp", progress=False)
        if q == "Q5_0":
            for part in split_gguf(out, d / "split" / "Tiny-Q5_0", parts=2):
                files[f"Q5_0/{part.name}"] = part.read_bytes()
        else:
            files[out.name] = out.read_bytes()
    files["mmproj-Tiny-F16.gguf"] = files["Tiny-Q8_0.gguf"][:64]
    return files


@pytest.fixture
def hub(tiny_files, sharded_files, gguf_files, big_files):
    """A fresh local Hub with the test repos (state and byte counters per test)."""
    s = HubServer()
    s.add(Repo("test/tiny-llama", dict(tiny_files)))
    s.add(Repo("test/sharded-qwen2", dict(sharded_files)))
    s.add(Repo("test/tiny-GGUF", dict(gguf_files)))
    s.add(Repo("test/big-llama", dict(big_files)))
    s.add(Repo("test/gated-llama", dict(tiny_files), gated=True, tokens={"hf_good"}))
    future = dict(tiny_files)
    cfg = json.loads(future["config.json"])
    cfg["architectures"] = ["FutureForCausalLM"]
    future["config.json"] = json.dumps(cfg).encode()
    s.add(Repo("test/tiny-future", future))
    s.add(Repo("test/pickles", {"config.json": tiny_files["config.json"], "pytorch_model.bin": b"\x80\x02pickle"}))
    s.start()
    yield s
    s.stop()


@pytest.fixture
def hub_env(hub, tmp_path, monkeypatch) -> dict:
    """Point ggtool at the local Hub, a fresh HF cache and a fresh store; returns the env for subprocesses."""
    cat = tmp_path / "catalog.json"
    cat.write_text(json.dumps(TEST_CATALOG))
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hf"), "GGTOOL_HOME": str(tmp_path / "home"),
           "GGTOOL_CACHE": str(tmp_path / "cache"), "GGTOOL_CATALOG": str(cat), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    from ggtool.hub import download

    monkeypatch.setattr(download, "BACKOFF", 0.05)
    full = {k: v for k, v in os.environ.items()}
    full["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + full.get("PYTHONPATH", "")
    return full

