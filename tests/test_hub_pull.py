"""`ggtool pull` against a local Hub (tests/hubserver.py): safetensors repos converted, GGUF repos
linked, aliases, local imports, offline mode, gated and missing repos. The real Hub is never contacted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ggtool.cli import main

pytest_plugins = ["tests.hubserver"]  # the local Hub fixtures: hub, hub_env, tiny_ckpt, gguf_files, ...


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def ok(capsys, *args):
    """Run a command that must succeed (main returns without SystemExit on success)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code in (0, None), err
    return out, err


def one_error(err: str, match: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    hints = [ln for ln in lines if ln.startswith("Hint: ")]
    assert len(errors) == 1 and len(hints) == 1 and "Traceback" not in err, err
    assert match.lower() in errors[0].lower(), err
    return hints[0]


def listed(capsys) -> dict:
    out, _ = ok(capsys, "list", "--json")
    return {m["tag"]: m for m in json.loads(out)}


def served_paths(hub, repo) -> set[str]:
    return {p for (r, p), n in hub.served.items() if r == repo and n}


def test_pull_safetensors_repo_converts_and_llama_cpp_runs_it(capsys, hub, hub_env, llama_cpp_ok):
    out, err = ok(capsys, "pull", "test/tiny-llama", "--json")
    res = json.loads(out)
    assert res["tag"] == "test/tiny-llama:Q4_K_M"
    m = res["manifest"]
    assert m["source"]["repo"] == "test/tiny-llama" and m["source"]["commit"] == hub.repos["test/tiny-llama"].commit
    assert m["quant"] == "Q4_K_M" and m["rules"] == "sensitivity" and m["tensor_types"]  # plan.DEFAULT_RULES
    assert m["architecture"] == "LlamaForCausalLM" and m["parameters"] > 0
    f = m["files"][0]
    assert len(f["sha256"]) == 64 and f["size"] == Path(res["path"]).stat().st_size
    # only what conversion needs: never pickles, repo code, READMEs or other folders
    assert served_paths(hub, "test/tiny-llama") == {"config.json", "generation_config.json", "tokenizer.json",
                                                    "tokenizer_config.json", "model.safetensors"}
    # source weights in the HF cache layout, named by sha256, linked from the snapshot
    repo = hub.repos["test/tiny-llama"]
    snap = Path(hub_env["HF_HUB_CACHE"]) / "models--test--tiny-llama" / "snapshots" / repo.commit
    st = snap / "model.safetensors"
    assert st.is_symlink() and Path(os.path.realpath(st)).name == repo.sha256("model.safetensors")
    assert (Path(hub_env["HF_HUB_CACHE"]) / "models--test--tiny-llama" / "refs" / "main").read_text() == repo.commit
    assert "test/tiny-llama:Q4_K_M" in listed(capsys)
    out, _ = ok(capsys, "show", "test/tiny-llama:Q4_K_M", "--json")
    assert json.loads(out)["model_name"] == "tiny-llama"  # the repo's name, not a snapshot's commit id
    # a stored name works wherever a model file does
    out, err = ok(capsys, "run", "test/tiny-llama:Q4_K_M", "Hello", "--raw", "-n", "4", "--threads", "1", "--json")
    assert json.loads(out)["prompt_tokens"] > 0


def test_second_pull_is_a_no_op(capsys, hub, hub_env):
    ok(capsys, "pull", "test/tiny-llama", "--quant", "Q8_0")
    before = sum(hub.served.values())
    out, err = ok(capsys, "pull", "test/tiny-llama", "--quant", "q8_0")
    assert "already in the store" in err
    assert sum(hub.served.values()) == before


def test_second_quant_reuses_the_cached_source(capsys, hub, hub_env):
    ok(capsys, "pull", "test/tiny-llama", "--quant", "Q8_0")
    before = hub.served_bytes("test/tiny-llama", "model.safetensors")
    ok(capsys, "pull", "test/tiny-llama", "--quant", "Q6_K")
    assert hub.served_bytes("test/tiny-llama", "model.safetensors") == before
    assert {"test/tiny-llama:Q8_0", "test/tiny-llama:Q6_K"} <= set(listed(capsys))


def test_pull_sharded_repo_takes_the_index_shards_only(capsys, hub, hub_env):
    out, err = ok(capsys, "pull", "test/sharded-qwen2", "--quant", "Q8_0", "--json")
    got = served_paths(hub, "test/sharded-qwen2")
    shards = {p for p in hub.repos["test/sharded-qwen2"].files if p.startswith("model-")}
    assert len(shards) == 2 and shards <= got
    assert "consolidated.safetensors" not in got and "model.safetensors.index.json" in got
    assert json.loads(out)["manifest"]["architecture"] == "Qwen2ForCausalLM"


def test_pull_gguf_repo_links_the_blob(capsys, hub, hub_env, llama_cpp_ok):
    out, err = ok(capsys, "pull", "test/tiny-GGUF:q4_k_m", "--json")
    res = json.loads(out)
    assert res["tag"] == "test/tiny-gguf:Q4_K_M"
    stored = Path(res["path"])
    repo = hub.repos["test/tiny-GGUF"]
    blob = Path(hub_env["HF_HUB_CACHE"]) / "models--test--tiny-GGUF" / "blobs" / repo.sha256("Tiny-Q4_K_M.gguf")
    assert stored.stat().st_ino == blob.stat().st_ino  # one copy on disk
    assert res["manifest"]["files"][0]["sha256"] == repo.sha256("Tiny-Q4_K_M.gguf")
    assert served_paths(hub, "test/tiny-GGUF") == {"Tiny-Q4_K_M.gguf"}
    out, _ = ok(capsys, "run", "test/tiny-gguf:Q4_K_M", "Hi", "--raw", "-n", "3", "--threads", "1", "--json")
    assert json.loads(out)["prompt_tokens"] > 0


def test_pull_split_gguf_takes_every_part(capsys, hub, hub_env, llama_cpp_ok):
    out, err = ok(capsys, "pull", "hf.co/test/tiny-GGUF:Q5_0", "--json")
    res = json.loads(out)
    names = [f["name"] for f in res["manifest"]["files"]]
    assert names == ["Tiny-Q5_0-00001-of-00002.gguf", "Tiny-Q5_0-00002-of-00002.gguf"]
    assert "split in 2 files" in err
    out, _ = ok(capsys, "run", "test/tiny-gguf:Q5_0", "Hi", "--raw", "-n", "3", "--threads", "1", "--json")
    assert json.loads(out)["prompt_tokens"] > 0


def test_missing_quant_lists_the_ones_that_exist(capsys, hub, hub_env):
    code, out, err = run_cli(capsys, "pull", "test/tiny-GGUF:Q3_K_S")
    assert code == 1 and out == ""
    one_error(err, "has no Q3_K_S GGUF")
    for q in ("Q8_0", "Q4_K_M", "Q5_0"):
        assert q in err
    assert "KB" in err or "MB" in err  # sizes
    assert "mmproj" not in err.lower()
    assert listed(capsys) == {}


def test_alias_pull(capsys, hub, hub_env):
    out, err = ok(capsys, "pull", "tiny:Q8_0", "--json")
    assert json.loads(out)["tag"] == "tiny:Q8_0"
    assert json.loads(out)["manifest"]["source"]["repo"] == "test/tiny-llama"


def test_alias_that_ggtool_cannot_convert_pulls_a_ready_gguf(capsys, hub, hub_env):
    out, err = ok(capsys, "pull", "tiny-new", "--quant", "Q8_0", "--json")
    res = json.loads(out)
    assert res["tag"] == "tiny-new:Q8_0" and res["manifest"]["source"]["repo"] == "test/tiny-GGUF"
    assert "cannot convert FutureForCausalLM" in err and "ready GGUF" in err
    assert not served_paths(hub, "test/tiny-future")


def test_alias_convertible_once_the_architecture_exists(capsys, hub, hub_env, monkeypatch):
    """The catalog reads ggtool.arch.ARCHITECTURES at run time: a family added later converts."""
    from ggtool import arch

    monkeypatch.setitem(arch.ARCHITECTURES, "FutureForCausalLM", arch.ARCHITECTURES["LlamaForCausalLM"])
    out, err = ok(capsys, "pull", "tiny-new", "--quant", "Q8_0", "--dry-run", "--json")
    plan = json.loads(out)
    assert plan["kind"] == "convert" and plan["source"]["repo"] == "test/tiny-future"


def test_dry_run_prints_the_plan_and_downloads_no_weights(capsys, hub, hub_env):
    out, err = ok(capsys, "pull", "test/tiny-llama", "--dry-run")
    for word in ("model.safetensors", "config.json", "convert", "Q4_K_M", "disk", "to download"):
        assert word in out, out
    assert hub.served_bytes("test/tiny-llama", "model.safetensors") == 0
    out, _ = ok(capsys, "pull", "test/tiny-llama", "--dry-run", "--json")
    plan = json.loads(out)
    assert plan["download_bytes"] == sum(f["size"] for f in plan["files"] if not f["cached"])
    assert plan["output_estimate"] > 0 and plan["disk"] and plan["disk"][0]["free"] > 0
    assert listed(capsys) == {}


def test_unsupported_architecture_repo(capsys, hub, hub_env):
    code, out, err = run_cli(capsys, "pull", "test/tiny-future")
    hint = one_error(err, "FutureForCausalLM")
    assert "GGUF" in hint


def test_pickle_only_repo_is_refused(capsys, hub, hub_env):
    code, out, err = run_cli(capsys, "pull", "test/pickles")
    one_error(err, "only pickle weights")
    assert not hub.served_bytes("test/pickles", "pytorch_model.bin")


@pytest.mark.parametrize("token,status", [(None, "401"), ("hf_bad", "403")])
def test_gated_repo_says_accept_the_licence(capsys, hub, hub_env, monkeypatch, token, status):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    code, out, err = run_cli(capsys, "pull", "test/gated-llama")
    hint = one_error(err, status)
    assert "licence" in hint and "HF_TOKEN" in hint
    assert listed(capsys) == {}


def test_gated_repo_with_a_granted_token(capsys, hub, hub_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    ok(capsys, "pull", "test/gated-llama", "--quant", "Q8_0")
    assert "test/gated-llama:Q8_0" in listed(capsys)
    assert any("/resolve/" in p for p in hub.authorized)
    assert not any(p.startswith("/lfs/") for p in hub.authorized)  # the token never goes to the CDN


@pytest.mark.parametrize("status", [401, 403])
def test_api_refusal_is_a_gated_error(capsys, hub, hub_env, status):
    hub.status["test/tiny-llama"] = status
    code, out, err = run_cli(capsys, "pull", "test/tiny-llama")
    hint = one_error(err, "tiny-llama")
    assert "HF_TOKEN" in hint


def test_no_such_repo(capsys, hub, hub_env):
    code, out, err = run_cli(capsys, "pull", "test/nope")
    hint = one_error(err, "no repo 'test/nope'")
    assert "spelling" in hint


def test_hub_unreachable(capsys, hub, hub_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    code, out, err = run_cli(capsys, "pull", "test/tiny-llama")
    hint = one_error(err, "cannot reach the Hugging Face Hub")
    assert "HF_HUB_OFFLINE" in hint


def test_offline_with_the_files_cached(capsys, hub, hub_env, monkeypatch):
    ok(capsys, "pull", "test/tiny-llama", "--quant", "Q8_0")
    n = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, err = ok(capsys, "pull", "test/tiny-llama", "--quant", "Q6_K")  # a new quant from cached sources
    out, err = ok(capsys, "pull", "test/tiny-llama", "--quant", "Q8_0")  # already stored
    assert "HF_HUB_OFFLINE" in err
    assert len(hub.requests) == n  # not one request
    assert {"test/tiny-llama:Q8_0", "test/tiny-llama:Q6_K"} <= set(listed(capsys))


def test_offline_without_the_files(capsys, hub, hub_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run_cli(capsys, "pull", "test/tiny-llama")
    hint = one_error(err, "not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE" in hint
    assert hub.requests == []


def test_import_local_gguf_is_a_hard_link(capsys, hub_env, gguf_files, tmp_path):
    src = tmp_path / "My-Model.Q8_0.gguf"
    src.write_bytes(gguf_files["Tiny-Q8_0.gguf"])
    out, err = ok(capsys, "pull", str(src), "--json")
    res = json.loads(out)
    assert res["tag"] == "my-model:Q8_0"
    assert Path(res["path"]).stat().st_ino == src.stat().st_ino


def test_import_local_checkpoint(capsys, hub_env, tiny_ckpt):
    out, err = ok(capsys, "pull", str(tiny_ckpt), "--quant", "Q8_0", "--name", "mine", "--json")
    res = json.loads(out)
    assert res["tag"] == "mine:Q8_0" and res["manifest"]["source"]["kind"] == "local-checkpoint"
    out, err = ok(capsys, "pull", str(tiny_ckpt), "--quant", "Q8_0", "--name", "mine")
    assert "already in the store" in err


def test_quant_given_twice_must_agree(capsys, hub, hub_env):
    code, out, err = run_cli(capsys, "pull", "test/tiny-GGUF:Q8_0", "--quant", "Q4_K_M")
    one_error(err, "--quant")


def test_unknown_alias_suggests(capsys, hub_env):
    code, out, err = run_cli(capsys, "pull", "tinny")
    hint = one_error(err, "unknown model 'tinny'")
    assert "tiny" in hint


def _layout(root: Path) -> dict:
    """blobs, snapshot links (-> blob name) and refs of one repo folder, as plain data."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + Path(os.readlink(p)).name
        elif p.is_file() and not rel.startswith(".") and not p.name.endswith(".lock"):
            out[rel] = p.read_text() if rel.startswith("refs/") else p.stat().st_size
    return out


def test_cache_layout_is_huggingface_hubs_own(capsys, hub, hub_env, tmp_path, monkeypatch):
    """huggingface_hub itself, pointed at the local Hub, lays its cache out exactly as ggtool does, and
    each finds the other's files: the weights live once, shared with every HF tool."""
    from huggingface_hub import hf_hub_download

    ok(capsys, "pull", "test/tiny-llama", "--quant", "Q8_0")
    ours = Path(hub_env["HF_HUB_CACHE"]) / "models--test--tiny-llama"
    theirs_root = tmp_path / "hf-theirs"
    names = [p for p in _layout(ours) if p.startswith("snapshots/")]
    for n in names:
        hf_hub_download("test/tiny-llama", n.split("/", 2)[2], revision="main", cache_dir=theirs_root,
                        endpoint=hub.url, token=False)
    assert _layout(theirs_root / "models--test--tiny-llama") == _layout(ours)
    # what ggtool downloaded, huggingface_hub uses without a request
    n = len(hub.requests)
    p = hf_hub_download("test/tiny-llama", "model.safetensors", cache_dir=ours.parent, endpoint=hub.url,
                        token=False, local_files_only=True)
    assert Path(p).read_bytes() == hub.repos["test/tiny-llama"].files["model.safetensors"]
    # and what huggingface_hub downloaded, ggtool uses without downloading it again
    served = hub.served_bytes("test/tiny-llama", "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(theirs_root))
    ok(capsys, "pull", "test/tiny-llama", "--quant", "Q6_K")
    assert hub.served_bytes("test/tiny-llama", "model.safetensors") == served
    assert len(hub.requests) > n  # it did ask the Hub (model info, tree)


def test_hf_home_is_honoured(monkeypatch, tmp_path):
    from ggtool.hub.cache import hub_cache_dir

    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    assert hub_cache_dir() == tmp_path / "hfhome" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub_cache_dir() == tmp_path / "c"
