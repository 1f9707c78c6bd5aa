"""A local Hub (tests/hubserver.py) whose API answers can be replaced by damaged ones: the
model-info JSON (commit, siblings, gated) and the file-tree JSON (paths, sizes, git blob ids,
LFS sha256) of one repo. Downloads are served as the real repo's bytes, so what a damaged
answer claims (a size, a digest) meets real data.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

REPOS = {  # repo -> seed folder whose files it holds
    "test/tiny-llama": "ck-gpt2",
    "test/tiny-GGUF": "gguf-q8_0",
}


def start(seed_root: Path):
    """A started local Hub holding REPOS (built from the seed folders under `seed_root`), whose
    `override` dict ({"info"|"tree": bytes}) replaces its API answers while set."""
    from tests.hubserver import HubServer, Repo, _Handler

    class FuzzHub(HubServer):
        override: dict[str, bytes] = {}

        def start(self):
            server = self

            class Handler(_Handler):
                hub = server

                def _api(self, parts, query):
                    rest = parts[2:]
                    kind = "info" if not rest or rest[0] == "revision" else "tree" if rest[0] == "tree" else None
                    if kind in server.override:
                        return self._send(200, server.override[kind])
                    return super()._api(parts, query)

            from http.server import ThreadingHTTPServer
            import threading

            self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self._httpd.daemon_threads = True
            threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
            return self

    hub = FuzzHub()
    for repo, seed in REPOS.items():
        folder = Path(seed_root) / seed
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        if seed.startswith("gguf-"):
            files = {"Tiny-Q8_0.gguf": files["model.gguf"], "README.md": b"# tiny GGUF\n"}
        hub.add(Repo(repo, files))
    return hub.start()


def api_answers(hub, repo: str) -> dict[str, bytes]:
    """The valid model-info and tree answers for `repo` (the seeds the mutators start from)."""
    commit = hub.repos[repo].commit
    out = {}
    for kind, path in (("info", f"/api/models/{repo}/revision/main"),
                       ("tree", f"/api/models/{repo}/tree/{commit}?recursive=True&expand=False")):
        with urllib.request.urlopen(hub.url + path) as r:
            out[kind] = json.dumps(json.loads(r.read()), indent=1).encode()
    return out
