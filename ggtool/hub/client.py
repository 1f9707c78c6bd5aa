"""The Hub API through huggingface_hub: a repo's commit at a revision and its file tree.

Honours HF_ENDPOINT (mirrors), HF_TOKEN (gated/private repos) and HF_HUB_OFFLINE, read at call
time. Every failure becomes a GgtoolError with a hint: gated (401/403), no such repo (404),
unreachable (network), offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from .. import __version__
from ..errors import GgtoolError
from .cache import safe_relpath

DEFAULT_ENDPOINT = "https://huggingface.co"
TRUE = ("1", "on", "yes", "true")


class HubError(GgtoolError):
    """The Hub (or a mirror) refused or could not answer."""


class GatedRepo(HubError):
    pass


class RepoNotFound(HubError):
    pass


class HubUnreachable(HubError):
    pass


class OfflineMode(HubError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    path: str                  # in the repo, '/'-separated
    size: int
    oid: str                   # git blob id (sha1 of "blob <size>\0" + content, or of the LFS pointer)
    sha256: str | None = None  # LFS files: the content's sha256, the Hub's checksum

    @property
    def etag(self) -> str:
        """What huggingface_hub names the blob: the LFS sha256, else the git blob id."""
        return self.sha256 or self.oid

    @property
    def digest_name(self) -> str:
        return "sha256" if self.sha256 else "git sha1"


@dataclass
class RepoInfo:
    repo: str
    revision: str
    commit: str
    files: list[RemoteFile] = field(default_factory=list)
    gated: bool = False
    private: bool = False

    def file(self, path: str) -> RemoteFile | None:
        return next((f for f in self.files if f.path == path), None)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def token() -> str | None:
    t = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if t:
        return t.strip()
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:
        return None


def gated_hint(repo: str) -> str:
    return (f"open {endpoint()}/{repo} while logged in and accept its licence, then set HF_TOKEN to an "
            "access token of that account (huggingface.co/settings/tokens)")


def not_found(repo: str, revision: str | None = None, what: str | None = None) -> RepoNotFound:
    return RepoNotFound(what or f"no repo {repo!r} on {endpoint()} (or it is private)",
                        hint="check the spelling (`ggtool pull --list` shows the aliases); "
                             "for a private repo set HF_TOKEN")


def unreachable(reason: str) -> HubUnreachable:
    return HubUnreachable(f"cannot reach the Hugging Face Hub at {endpoint()}: {reason}",
                          hint="check the network (or proxy); HF_ENDPOINT picks a mirror; "
                               "HF_HUB_OFFLINE=1 uses only what is already cached")


def malformed(repo: str, what: str) -> HubError:
    return HubError(f"the Hub's answer about {repo} is malformed: {what}",
                    hint="the server does not speak the Hub protocol (or is broken); check HF_ENDPOINT")


def _one_line(e: BaseException, n: int = 200) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def http_error(status: int, repo: str, what: str) -> HubError:
    """An HTTP status from the Hub -> the error users can act on."""
    if status in (401, 403):
        return GatedRepo(f"{what}: access denied ({status}); {repo} is gated or private",
                         hint=gated_hint(repo))
    if status == 404:
        return not_found(repo, what=f"{what}: not found (404)")
    return HubError(f"{what}: the Hub answered HTTP {status}",
                    hint="try again later; HF_ENDPOINT picks a mirror")


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=token() or False, library_name="ggtool", library_version=__version__)


def repo_info(repo: str, revision: str = "main") -> RepoInfo:
    """The commit `revision` points to and every file in it (path, size, LFS sha256)."""
    if offline():
        raise OfflineMode(f"HF_HUB_OFFLINE is set: cannot ask the Hub about {repo}",
                          hint="unset HF_HUB_OFFLINE to reach the Hub")
    try:
        from huggingface_hub.utils import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                           RevisionNotFoundError)
    except ImportError:  # pragma: no cover
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                            RevisionNotFoundError)
    api = _api()
    try:
        info = api.model_info(repo, revision=revision)
        commit = info.sha
        if not commit:
            raise HubError(f"the Hub gave no commit for {repo}@{revision}",
                           hint="the server does not speak the Hub protocol; check HF_ENDPOINT")
        entries = list(api.list_repo_tree(repo, revision=commit, recursive=True))
    except GatedRepoError:
        raise GatedRepo(f"{repo} is gated: you have not been granted access", hint=gated_hint(repo)) from None
    except RevisionNotFoundError:
        raise RepoNotFound(f"{repo} has no revision {revision!r}",
                           hint="check --revision (a branch, a tag or a commit id)") from None
    except RepositoryNotFoundError:
        raise not_found(repo) from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", 0) or 0
        raise http_error(status, repo, f"asking the Hub about {repo}") from None
    except GgtoolError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as e:  # huggingface_hub could not parse it
        raise malformed(repo, f"{e.__class__.__name__}: {_one_line(e)}") from None
    except Exception as e:  # connection refused, DNS, TLS, timeouts: whatever the HTTP library raises
        raise unreachable(f"{e.__class__.__name__}: {_one_line(e)}" if str(e) else e.__class__.__name__) from None
    if not isinstance(commit, str):
        raise malformed(repo, f"the commit id is {str(commit)[:40]!r}")
    files = []
    for i, e in enumerate(entries):
        if getattr(e, "size", None) is None or not hasattr(e, "blob_id"):
            continue  # a folder
        lfs = getattr(e, "lfs", None)
        size = lfs.size if lfs is not None else e.size
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        for what, v, ok in (("path", e.path, isinstance(e.path, str)), ("git blob id", e.blob_id, isinstance(e.blob_id, str)),
                            ("size", size, isinstance(size, int) and not isinstance(size, bool) and 0 <= size < 2**60),
                            ("sha256", sha, sha is None or isinstance(sha, str))):
            if not ok:
                raise malformed(repo, f"file {i} of the tree has {what} {str(v)[:40]!r}")
        safe_relpath(e.path)  # refuse '..' and absolute names here, before anything is written
        files.append(RemoteFile(path=e.path, size=size, oid=e.blob_id, sha256=sha))
    return RepoInfo(repo=repo, revision=revision, commit=commit, files=files,
                    gated=bool(getattr(info, "gated", False)), private=bool(getattr(info, "private", False)))


def resolve_url(repo: str, commit: str, path: str) -> str:
    return f"{endpoint()}/{repo}/resolve/{commit}/{quote(path)}"


def auth_headers(url: str) -> dict[str, str]:
    """Authorization only for the Hub endpoint itself, never for a CDN it redirects to."""
    h = {"User-Agent": f"ggtool/{__version__}"}
    tok = token()
    if tok and urlsplit(url).netloc == urlsplit(endpoint()).netloc:
        h["Authorization"] = f"Bearer {tok}"
    return h
