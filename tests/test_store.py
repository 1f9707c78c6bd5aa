"""The model store and its everyday commands: list, show, rm, cp, prune (each with --json), stored
names wherever a model file is taken, the manifest written last, locks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ggtool import store
from tests.test_hub_pull import listed, ok, one_error, run_cli

pytest_plugins = ["tests.hubserver"]  # the local Hub fixtures: hub, hub_env, tiny_ckpt, gguf_files, ...


@pytest.fixture
def two_models(capsys, hub_env, gguf_files, tmp_path):
    """tiny:Q8_0 and tiny:Q4_K_M, imported from local GGUF files (no network)."""
    for q in ("Q8_0", "Q4_K_M"):
        src = tmp_path / f"tiny-{q}.gguf"
        src.write_bytes(gguf_files[f"Tiny-{q}.gguf"])
        ok(capsys, "pull", str(src), "--name", "tiny")
    return ["tiny:Q4_K_M", "tiny:Q8_0"]


def test_list_json_fields(capsys, two_models):
    out, err = ok(capsys, "list", "--json")
    rows = json.loads(out)
    assert [r["tag"] for r in rows] == two_models
    for r in rows:
        assert set(r) == {"name", "quant", "tag", "size", "modified", "path", "source"}
        assert r["size"] == Path(r["path"]).stat().st_size and r["modified"].endswith("Z")
    out, err = ok(capsys, "list")
    assert out.splitlines()[0].split() == ["NAME", "SIZE", "MODIFIED", "SOURCE"]
    assert "tiny:Q8_0" in out and err == ""


def test_show_json_and_text(capsys, two_models):
    out, _ = ok(capsys, "show", "tiny:Q8_0", "--json")
    info = json.loads(out)
    assert info["architecture"] == "llama" and info["quant"] == "Q8_0" and info["file_type"] == "Q8_0"
    assert info["parameters"] > 0 and info["context_length"] == 2048 and info["layers"] == 2
    assert info["tensor_types"]["Q8_0"] > 0 and info["tensor_types"]["F32"] > 0
    assert info["source"]["kind"] == "local-gguf" and Path(info["path"]).is_file()
    assert info["chat_template"] is None or isinstance(info["chat_template"], str)
    out, _ = ok(capsys, "show", "tiny:Q8_0")
    for word in ("architecture", "parameters", "context length", "tensor types", "chat template", "source", "path"):
        assert word in out
    # a plain file works too
    out, _ = ok(capsys, "show", info["path"], "--json")
    assert json.loads(out)["architecture"] == "llama"


def test_show_needs_a_quant_when_there_are_several(capsys, two_models):
    code, out, err = run_cli(capsys, "show", "tiny")
    hint = one_error(err, "2 quants")
    assert "tiny:Q4_K_M" in hint


def test_resolve_model(two_models, tmp_path):
    p = store.resolve_model("tiny:q8_0")
    assert p.is_file() and p.parent.name == "Q8_0"
    assert store.resolve_model(str(p)) == p
    assert store.resolve_model(str(tmp_path / "nope.gguf")) == tmp_path / "nope.gguf"  # a path: left to the caller
    with pytest.raises(store.StoreError, match="neither a file, a folder nor a stored model"):
        store.resolve_model("nosuchmodel")
    with pytest.raises(store.StoreError, match="2 quants"):
        store.resolve_model("tiny")


def test_stored_name_for_convert_and_quantize(capsys, two_models, tmp_path):
    out = tmp_path / "re.gguf"
    ok(capsys, "convert", "tiny:Q8_0", "-o", str(out), "--type", "F16")
    assert out.is_file()
    code, o, err = run_cli(capsys, "quantize", "nosuchmodel:Q8_0", str(tmp_path / "x.gguf"), "--quant", "Q4_K_M")
    one_error(err, "nosuchmodel")


def test_rm_json_and_all_quants(capsys, two_models):
    out, _ = ok(capsys, "rm", "tiny:Q8_0", "--json")
    r = json.loads(out)
    assert [x["tag"] for x in r] == ["tiny:Q8_0"]
    assert r[0]["freed"] < 4096 < r[0]["size"]  # a hard link: the source file keeps the bytes
    assert set(listed(capsys)) == {"tiny:Q4_K_M"}
    out, err = ok(capsys, "rm", "tiny")
    assert "removed tiny:Q4_K_M" in err
    assert listed(capsys) == {}
    assert not (store.root() / "tiny").exists()


def test_rm_unknown_removes_nothing(capsys, two_models):
    code, out, err = run_cli(capsys, "rm", "tiny:Q8_0", "nope:Q4_K_M")
    hint = one_error(err, "no model 'nope:Q4_K_M'")
    assert "ggtool list" in hint
    assert len(listed(capsys)) == 2  # checked every name before removing any


def test_rm_refuses_while_pulled(capsys, two_models):
    with store.locked("tiny", "Q8_0"):
        code, out, err = run_cli(capsys, "rm", "tiny:Q8_0")
    one_error(err, "being pulled")
    assert "tiny:Q8_0" in listed(capsys)


def test_cp_is_a_hard_link(capsys, two_models):
    out, _ = ok(capsys, "cp", "tiny:Q8_0", "mine", "--json")
    r = json.loads(out)
    assert r["tag"] == "mine:Q8_0"
    assert Path(r["path"]).stat().st_ino == store.lookup("tiny:Q8_0").path.stat().st_ino
    m = store.lookup("mine:Q8_0").manifest
    assert m["copied_from"] == "tiny:Q8_0" and m["files"][0]["sha256"] == store.lookup("tiny:Q8_0").manifest["files"][0]["sha256"]
    code, out, err = run_cli(capsys, "cp", "tiny:Q8_0", "mine")
    one_error(err, "already exists")
    ok(capsys, "rm", "tiny")
    assert store.lookup("mine:Q8_0").path.is_file()  # still there after the original went


def test_a_folder_without_manifest_is_not_a_model(capsys, hub_env):
    d = store.begin("half", "Q4_K_M", {"source": {"kind": "test"}})
    (d / "half-Q4_K_M.gguf.abc.incomplete").write_bytes(b"x" * 1000)
    assert listed(capsys) == {}
    with pytest.raises(store.StoreError):
        store.resolve_model("half:Q4_K_M")
    # a running pull (lock held) is left alone
    with store.locked("half", "Q4_K_M"):
        out, _ = ok(capsys, "prune", "--json")
        assert json.loads(out)["items"] == [] and d.exists()
    out, _ = ok(capsys, "prune", "--dry-run", "--json")
    res = json.loads(out)
    assert res["dry_run"] and [i["kind"] for i in res["items"]] == ["incomplete pull"] and d.exists()
    out, err = ok(capsys, "prune")
    assert "incomplete pull" in out and "freed 1.1 KB" in err  # the partial file + pull.json
    assert not d.exists()


def test_prune_orphaned_blobs_but_not_linked_ones(capsys, hub_env):
    root = Path(hub_env["HF_HUB_CACHE"]) / "models--someone--model"
    (root / "blobs").mkdir(parents=True)
    linked, orphan = "a" * 64, "b" * 40
    (root / "blobs" / linked).write_bytes(b"1" * 10)
    (root / "blobs" / orphan).write_bytes(b"2" * 20)
    snap = root / "snapshots" / ("c" * 40)
    snap.mkdir(parents=True)
    os.symlink(f"../../blobs/{linked}", snap / "model.safetensors")
    out, _ = ok(capsys, "prune", "--json")
    res = json.loads(out)
    assert [(i["kind"], Path(i["path"]).name, i["bytes"]) for i in res["items"]] == [("orphaned blob", orphan, 20)]
    assert (root / "blobs" / linked).exists() and not (root / "blobs" / orphan).exists()


def test_manifest_is_written_last(capsys, hub_env, tiny_ckpt, monkeypatch):
    """A pull that fails mid-convert leaves no model behind (and kill -9 leaves only what prune takes)."""
    import ggtool.convert as conv

    real = conv.quants.quantize
    calls = {"n": 0}

    def boom(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(conv.quants, "quantize", boom)
    code, out, err = run_cli(capsys, "pull", str(tiny_ckpt), "--quant", "Q8_0", "--name", "x")
    assert code == 130
    assert listed(capsys) == {}
    assert not (store.root() / "x").exists()


def test_names_map_to_one_folder_each(hub_env):
    assert store.folder("org/repo", "q4_k_m") == store.root() / "org--repo" / "Q4_K_M"
    assert store.folder("smollm2-135m", "Q8_0") == store.root() / "smollm2-135m" / "Q8_0"
    for bad in ("../x", "a/b/c", "a--b", "UPPER", ""):
        with pytest.raises(Exception):
            store.folder(bad, "Q8_0")
