"""Our downloader: resumable across processes, verified, retried. Files land in the HF cache.

huggingface_hub alone restarts a killed download from zero and does not check LFS sha256, so
for each file:
  - the bytes go to blobs/<etag>.incomplete (a stable name): a run killed with kill -9 and run
    again asks only for the missing bytes (HTTP Range), hashing what is already there first;
  - the content is hashed while it streams and checked against the Hub's sha256 (LFS files) or
    git blob id (small files) before the blob is renamed into place; a mismatch deletes the
    bad file and says so;
  - a dropped connection or a stall (no byte for HF_HUB_DOWNLOAD_TIMEOUT seconds) is retried
    with exponential backoff from where it stopped;
  - one tqdm bar per file (bytes, rate, time left) on stderr, on a terminal only;
  - a lock per blob (the file huggingface_hub locks too) keeps two processes from writing it.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

from ..errors import CorruptFile, GgtoolError, OutputError
from ..lock import file_lock
from ..paths import cache_dir
from ..units import human_bytes
from . import client
from .cache import RepoCache, _short
from .client import RemoteFile

CHUNK = 1 << 20
SYNC_EVERY = 256 << 20          # fdatasync the partial file every 256 MiB (survives power loss)


TIMEOUT = 20.0                  # seconds without a byte before a read counts as a stall
RETRIES = 8                     # attempts in a row without progress before giving up
BACKOFF = 1.0                   # first wait between attempts; doubles each time
BACKOFF_MAX = 30.0


@dataclass
class Policy:
    timeout: float
    retries: int
    backoff: float
    backoff_max: float

    @classmethod
    def from_env(cls) -> "Policy":
        """The module's defaults; HF_HUB_DOWNLOAD_TIMEOUT (huggingface_hub's variable) sets the stall timeout."""
        timeout = TIMEOUT
        try:
            timeout = float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or TIMEOUT)
        except ValueError:
            pass
        return cls(timeout, RETRIES, BACKOFF, BACKOFF_MAX)


class ChecksumMismatch(CorruptFile):
    hint = ("the server sent different bytes than the Hub lists; the bad file was deleted. Run the pull "
            "again; if it fails again, the mirror (HF_ENDPOINT) or a proxy is serving damaged data")


class DownloadFailed(GgtoolError):
    hint = "run the same pull again: it resumes from what is already downloaded"


class _Transient(Exception):
    """Worth retrying: dropped connection, stall, 5xx/429."""


class _Restart(Exception):
    """The server ignored our Range: start the file over."""


# --------------------------------------------------------------------------- hashing

def new_hasher(rf: RemoteFile):
    if rf.sha256:
        return hashlib.sha256()
    h = hashlib.sha1()
    h.update(b"blob %d\0" % rf.size)  # git's blob id
    return h


def expected_digest(rf: RemoteFile) -> str:
    return rf.sha256 or rf.oid


def hash_file(path: Path, h, limit: int | None = None):
    with open(path, "rb") as f:
        left = limit
        while left is None or left > 0:
            b = f.read(CHUNK if left is None else min(CHUNK, left))
            if not b:
                break
            h.update(b)
            if left is not None:
                left -= len(b)
    return h


def _verified_mark(etag: str) -> Path:
    return cache_dir() / "verified" / etag


def blob_verified(blob: Path, rf: RemoteFile) -> bool:
    """A blob already in the cache: ours are checked when written; others' are hashed once."""
    try:
        st = blob.stat()
    except OSError:
        return False
    if st.st_size != rf.size:
        return False
    mark = _verified_mark(rf.etag)
    stamp = f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"
    try:
        if mark.read_text() == stamp:
            return True
    except OSError:
        pass
    if hash_file(blob, new_hasher(rf)).hexdigest() != expected_digest(rf):
        return False
    _mark_verified(blob, rf)
    return True


def _mark_verified(blob: Path, rf: RemoteFile) -> None:
    st = blob.stat()
    mark = _verified_mark(rf.etag)
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.write_text(f"{st.st_size} {st.st_mtime_ns} {st.st_ino}")
    except OSError:
        pass  # only a speed-up


# --------------------------------------------------------------------------- HTTP

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # we follow redirects ourselves (auth only to the Hub's own host)


_OPENER = urllib.request.build_opener(_NoRedirect)


def _open_range(url: str, start: int, timeout: float, repo: str, name: str):
    """GET url from byte `start`, following redirects. Returns (response, status, url)."""
    for _ in range(10):
        headers = {**client.auth_headers(url), "Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        req = urllib.request.Request(url, headers=headers)
        try:
            resp = _OPENER.open(req, timeout=timeout)
            return resp, resp.status, url
        except urllib.error.HTTPError as e:
            status = e.code
            if status in (301, 302, 303, 307, 308) and e.headers.get("Location"):
                url = urljoin(url, e.headers["Location"])
                e.close()
                continue
            e.close()
            if status == 416:
                return None, 416, url
            if status == 429 or status >= 500:
                raise _Transient(f"HTTP {status}") from None
            raise client.http_error(status, repo, f"downloading {_short(name, 200)}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise _Transient(_reason(e)) from None
    raise client.HubError(f"downloading {_short(name, 200)}: too many redirects", hint="check HF_ENDPOINT")


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and e.reason is not None:
        e = e.reason if isinstance(e.reason, BaseException) else e
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "stalled (no data before the read timeout)"
    if isinstance(e, http.client.IncompleteRead):
        return "connection dropped mid-file"
    return f"{e.__class__.__name__}: {e}" if str(e) else e.__class__.__name__


def _content_range_start(resp) -> int | None:
    cr = resp.headers.get("Content-Range", "")  # "bytes 100-199/200"
    try:
        return int(cr.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


# --------------------------------------------------------------------------- one file

def fetch(rf: RemoteFile, repo: str, commit: str, *, cache: RepoCache | None = None,
          policy: Policy | None = None, progress: bool = True, log=None) -> Path:
    """The snapshot path of `rf` at `commit`, downloaded and verified if it is not cached yet."""
    cache = cache or RepoCache(repo)
    policy = policy or Policy.from_env()
    log = log or (lambda msg: None)
    cache.pointer(commit, rf.path)  # refuses names that escape the snapshot folder
    blob = cache.blob(rf.etag)
    if blob.exists() and blob_verified(blob, rf):
        return cache.link(commit, rf.path, rf.etag)
    with file_lock(cache.lock_path(rf.etag),
                   on_wait=lambda: log(f"{rf.path}: another process is downloading it; waiting")):
        if blob.exists():
            if blob_verified(blob, rf):
                return cache.link(commit, rf.path, rf.etag)
            log(f"{rf.path}: the cached copy does not match its {rf.digest_name}; downloading it again")
            blob.unlink()
        blob.parent.mkdir(parents=True, exist_ok=True)
        part = cache.partial(rf.etag)
        _download(rf, repo, commit, part, policy, progress, log)
        os.replace(part, blob)
        _mark_verified(blob, rf)
    return cache.link(commit, rf.path, rf.etag)


def _download(rf: RemoteFile, repo: str, commit: str, part: Path, policy: Policy, progress: bool, log) -> None:
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    if have > rf.size:
        part.unlink()
        have = 0
    h = new_hasher(rf)
    if have:
        hash_file(part, h, have)
        log(f"resuming {rf.path} at {human_bytes(have)} of {human_bytes(rf.size)}")
    else:
        log(f"downloading {rf.path} ({human_bytes(rf.size)})")
    url = client.resolve_url(repo, commit, rf.path)
    disable = True if (not progress or os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")) else None  # None: TTY only
    failures = restarts = 0
    try:
        with open(part, "ab") as f, tqdm(total=rf.size, initial=have, desc=rf.path[-40:], unit="B", unit_scale=True,
                                         unit_divisor=1024, file=sys.stderr, disable=disable, leave=False,
                                         dynamic_ncols=True) as bar:
            synced = have
            while have < rf.size:
                before = have
                try:
                    have = _stream(rf, repo, url, f, h, have, policy, bar)
                except _Restart:
                    restarts += 1  # a server whose file is shorter than the Hub's size: 416, restart, 416, ...
                    if restarts > policy.retries:
                        raise DownloadFailed(f"downloading {_short(f'{repo}/{rf.path}', 200)} restarted from the beginning {restarts} times: the "
                                             f"server does not serve the {human_bytes(rf.size)} the Hub lists") from None
                    f.seek(0)
                    f.truncate()
                    h, have = new_hasher(rf), 0
                    bar.reset(total=rf.size)
                    continue
                except _Transient as e:
                    f.flush()
                    have = f.tell()  # what this attempt wrote (and hashed) before it broke
                    failures = 0 if have > before else failures + 1
                    if failures > policy.retries:
                        raise DownloadFailed(f"downloading {_short(f'{repo}/{rf.path}', 200)} failed {failures} times in a row ({e}); "
                                             f"{human_bytes(have)} of {human_bytes(rf.size)} are kept") from None
                    wait = min(policy.backoff * 2 ** max(failures - 1, 0), policy.backoff_max)
                    log(f"{rf.path}: {e} at {human_bytes(have)}; retrying in {wait:.1f} s")
                    time.sleep(wait)
                    continue
                if have - synced >= SYNC_EVERY:
                    f.flush()
                    os.fdatasync(f.fileno())
                    synced = have
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # a write, a sync, or the flush when the file closes (after an error too)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputError(
                f"no space left on the device while downloading {rf.path} ({human_bytes(have)} of {human_bytes(rf.size)})",
                hint="free some disk space and pull again: it resumes; `ggtool prune` removes the "
                     "partial download") from None
        raise OutputError(f"cannot write {part}: {e.strerror or e}",
                          hint="the disk reported an error; pull again (it resumes) or free/check the disk; "
                               "`ggtool prune` removes the partial download") from None
    got = h.hexdigest()
    if got != expected_digest(rf):
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(f"{rf.path}: {rf.digest_name} mismatch (expected {expected_digest(rf)}, got {got}); "
                               "the bad file was deleted and nothing was stored")
    log(f"{rf.path}: {rf.digest_name} verified")


def _stream(rf: RemoteFile, repo: str, url: str, f, h, have: int, policy: Policy, bar) -> int:
    """One GET from `have` on; appends to f, returns the new byte count (raises to retry)."""
    resp, status, _ = _open_range(url, have, policy.timeout, repo, rf.path)
    if status == 416:
        if have == rf.size:
            return have
        raise _Restart()
    with resp:
        if have and (status != 206 or _content_range_start(resp) != have):
            raise _Restart()
        try:
            while have < rf.size:
                b = resp.read1(min(CHUNK, rf.size - have))  # what has arrived: little is lost to a kill
                if not b:
                    raise _Transient("connection dropped mid-file")
                _write(f, b)
                h.update(b)
                have += len(b)
                bar.update(len(b))
        except (OSError, http.client.HTTPException) as e:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise _Transient(_reason(e)) from None
        finally:
            f.flush()
    return have


def _write(f, b: bytes) -> None:
    f.write(b)  # one place, so tests can make the disk full mid-file



