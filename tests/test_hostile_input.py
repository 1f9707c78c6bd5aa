"""Hostile and broken input, one field at a time (issue #12).

Every reader turns a malformed input into a GgtoolError that names the file and what is wrong
(the key or byte offset where it can), with a hint; a header that claims 2^60 elements fails
having allocated nothing; the two tracebacks the issue reported stay fixed. The GGUFs here are
built byte by byte (not by ggtool's writer); gguf-py is the oracle where a file is valid.
Hypothesis drives the property tests (any value in any GGUF header number, any safetensors
shape/offsets, any JSON value for a config.json key); fuzz/ runs the seeded mutation campaigns.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ggtool.cli import EXIT_BUG, main
from ggtool.errors import CorruptFile, GgtoolError, InputError
from ggtool.formats.gguf_reader import GGUFFile
from ggtool.formats.safetensors import SafetensorsFile
from tests import tinymodels as tm

REPO = Path(__file__).resolve().parent.parent
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def one_error(code, err, *names):
    """exit 1, one Error: line naming each of `names`, one Hint: line, no traceback."""
    assert code == 1, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) == 1 and len([ln for ln in lines if ln.startswith("Hint: ")]) == 1, err
    for n in names:
        assert n in errors[0], err
    return errors[0]


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    return tm.make_checkpoint(tmp_path_factory.mktemp("hostile") / "ck", "llama", hidden=32, layers=1,
                              heads=2, kv_heads=1)


@pytest.fixture(scope="module")
def f16(ck, tmp_path_factory):
    from ggtool.convert import convert

    return convert(ck, tmp_path_factory.mktemp("hostile16") / "model.gguf", "F16", progress=False).path


# --------------------------------------------------------------------------- the two tracebacks

def field_offset(path: Path, key: str) -> tuple[int, int]:
    """(offset of key's record, offset of its array count), from gguf-py's reader (the oracle)."""
    import gguf

    f = gguf.GGUFReader(str(path)).fields[key]
    start = f.offset
    return start, start + 8 + len(key.encode()) + 4 + 4


@pytest.mark.parametrize("count", [2**63 + 12345, 2**64 - 1, 2**40])
def test_huge_string_array_length_is_an_error_not_a_traceback(capsys, f16, tmp_path, count):
    """Issue #12: `OverflowError: Python int too large to convert to C ssize_t` in quantize/convert."""
    bad = tmp_path / "damaged.gguf"
    data = bytearray(f16.read_bytes())
    _, at = field_offset(f16, "tokenizer.ggml.tokens")
    data[at: at + 8] = struct.pack("<Q", count)
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    for cmd in (["quantize", bad, out / "q.gguf", "--quant", "Q8_0"], ["convert", bad, "-o", out / "c.gguf"]):
        code, stdout, err = run_cli(capsys, *cmd)
        line = one_error(code, err, "damaged.gguf", "tokenizer.ggml.tokens", "at byte")
        assert "elements" in line and stdout == ""
        assert os.listdir(out) == []


@pytest.mark.parametrize("where,value", [
    ("merges", [[1, 2]]), ("merges", 17), ("vocab", {"a": "x"}), ("vocab", {"a": -1}), ("vocab", [1, 2]),
])
def test_wrong_type_in_merges_or_vocab_is_an_error_not_a_traceback(capsys, ck, tmp_path, where, value):
    """Issue #12: the tokenizers library's `Exception: invalid type: ... expected u32` escaped."""
    import shutil

    d = shutil.copytree(ck, tmp_path / "ck")
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["model"][where] = value
    (d / "tokenizer.json").write_text(json.dumps(tj))
    code, out, err = run_cli(capsys, "convert", d, "-o", tmp_path / "m.gguf")
    one_error(code, err, "tokenizer.json")
    assert not (tmp_path / "m.gguf").exists()


# --------------------------------------------------------------------------- GGUF, byte by byte

def s(b: bytes | str) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def ti(name, dims, ttype=0, off=0, nd=None) -> bytes:
    return s(name) + struct.pack("<I", len(dims) if nd is None else nd) + b"".join(struct.pack("<Q", d) for d in dims) \
        + struct.pack("<IQ", ttype, off)


def gguf(kvs=(), tis=(), data=b"", n_kv=None, n_tensors=None, version=3, magic=b"GGUF") -> bytes:
    head = magic + struct.pack("<I", version) + struct.pack("<QQ", len(tis) if n_tensors is None else n_tensors,
                                                           len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(tis)
    head += b"\0" * (-len(head) % 32)
    return head + data


ARCH = kv("general.architecture", 8, s("llama"))
ONE_TENSOR = ti("t", [32], 0, 0)
DATA = np.ones(32, np.float32).tobytes()

GGUF_CASES = {
    "2^60 key-values": (gguf([ARCH], n_kv=2**60), "key-values"),
    "2^60 tensors": (gguf([ARCH], n_tensors=2**60), "tensors"),
    "u8 array of 2^60": (gguf([ARCH, kv("a", 9, struct.pack("<IQ", 0, 2**60))]), "1152921504606846976 elements"),
    "string array of 2^60": (gguf([ARCH, kv("a", 9, struct.pack("<IQ", 8, 2**60))]), "elements"),
    "string array count 2^63+": (gguf([ARCH, kv("a", 9, struct.pack("<IQ", 8, 2**63 + 5) + s("x"))]), "elements"),
    "string of 2^60 bytes": (gguf([ARCH, kv("a", 8, struct.pack("<Q", 2**60))]), "runs past the end"),
    "key of 2^64-1 bytes": (gguf([struct.pack("<Q", 2**64 - 1) + b"k"]), "runs past the end"),
    "nested 20 deep": (gguf([ARCH, kv("a", 9, struct.pack("<IQ", 9, 1) * 20 + struct.pack("<IQ", 4, 0))]), "deep"),
    "unknown value type": (gguf([ARCH, kv("a", 13, b"\0" * 8)]), "unknown value type 13"),
    "unknown element type": (gguf([ARCH, kv("a", 9, struct.pack("<IQ", 99, 1))]), "unknown value type 99"),
    "5 dimensions": (gguf([ARCH], [ti("t", [1, 1, 1, 1, 1])]), "5 dimensions"),
    "dims overflow": (gguf([ARCH], [ti("t", [2**62, 8])]), "overflow"),
    "dim 2^64-1": (gguf([ARCH], [ti("t", [2**64 - 1])]), "overflow"),
    "row not a block multiple": (gguf([ARCH], [ti("t", [33], 8)]), "multiple of its block"),
    "unknown ggml type": (gguf([ARCH], [ti("t", [32], 99)]), "unknown ggml type 99"),
    "unaligned offset": (gguf([ARCH], [ti("t", [32], 0, 4)], DATA + b"\0" * 4), "alignment"),
    "tensor past the end": (gguf([ARCH], [ti("t", [32], 0, 0)], DATA[:100]), "truncated"),
    "offset 2^64-32": (gguf([ARCH], [ti("t", [32], 0, 2**64 - 32)], DATA), "truncated"),
    "duplicate key": (gguf([ARCH, ARCH]), "appears twice"),
    "duplicate tensor": (gguf([ARCH], [ONE_TENSOR, ONE_TENSOR], DATA), "appears twice"),
    "empty key": (gguf([kv("", 4, b"\0" * 4)]), "empty"),
    "alignment 0": (gguf([ARCH, kv("general.alignment", 4, struct.pack("<I", 0))], [ONE_TENSOR], DATA), "power of two"),
    "alignment 3": (gguf([ARCH, kv("general.alignment", 4, struct.pack("<I", 3))], [ONE_TENSOR], DATA), "power of two"),
    "alignment string": (gguf([ARCH, kv("general.alignment", 8, s("32"))], [ONE_TENSOR], DATA), "power of two"),
    "alignment array": (gguf([ARCH, kv("general.alignment", 9, struct.pack("<IQ", 4, 1) + b"\0" * 4)]), "power of two"),
    "bad magic": (gguf([ARCH], magic=b"GGML"), "does not start with 'GGUF'"),
    "version 1": (gguf([ARCH], version=1), "version 1"),
    "big-endian": (gguf([ARCH], version=3 << 24), "big-endian"),
    "invalid UTF-8 key": (gguf([kv(b"\xff\xfe", 4, b"\0" * 4)]), "UTF-8"),
    "invalid UTF-8 array element": (gguf([ARCH, kv("a", 9, struct.pack("<IQ", 8, 2) + s("ok") + s(b"\xc3"))]), "string 1"),
    "tensor name of 64 bytes": (gguf([ARCH], [ti("x" * 64, [32])], DATA), "name of 64 bytes"),
    "truncated header": (gguf([ARCH])[:30], "can hold"),
    "truncated key": (gguf([ARCH, ARCH + b"x" * 40])[:60], "runs past the end"),
    "empty file": (b"", "too short"),
}


@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_gguf_damage_is_named_with_its_offset_and_allocates_nothing(case, tmp_path):
    data, match = GGUF_CASES[case]
    p = tmp_path / "damaged.gguf"
    p.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFile) as e:
            GGUFFile(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes allocated for a {len(data)}-byte file"
    msg = e.value.message
    assert "damaged.gguf" in msg and match in msg and e.value.hint, msg
    if len(data) >= 24:
        assert "at byte" in msg, msg
    assert "\n" not in msg and len(msg) < 400


def test_every_value_type_and_nested_arrays_round_trip(tmp_path):
    """A valid GGUF with one key of each type, arrays of each, an empty array and arrays of
    arrays: ggtool's reader agrees with gguf-py, and a quantize copies every key with its types
    (gguf-py reads the output)."""
    import gguf as ggufpy

    from fuzz import seeds
    from ggtool.convert import convert

    d = seeds.build(tmp_path / "seeds", only={"gguf-kinds"})["gguf-kinds"]
    src = d / "model.gguf"

    def fields(path):
        r = ggufpy.GGUFReader(str(path))
        return {k: (f.types, f.contents()) for k, f in r.fields.items() if k.startswith("fuzz.")}

    want = fields(src)
    assert len(want) == 2 * 12 + 3
    ours = GGUFFile(src)
    try:
        for key, (types, value) in want.items():
            kv = ours.kv[key]
            ours_types = [kv.vtype] + ([kv.sub_type] if kv.sub_type is not None else [])
            assert ours_types[: len(types[:2])] == types[:2], key  # gguf-py names no element type for []
            got = kv.value
            if key.startswith("fuzz.array.nested"):  # gguf-py's contents() flattens arrays of arrays
                got = [x for inner in got for x in inner]
            got = list(got) if isinstance(got, list) else got
            numeric = isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float))
            assert got == (pytest.approx(value) if numeric else value), key
    finally:
        ours.close()
    out = convert(src, tmp_path / "q.gguf", "Q8_0", rules="llama.cpp", progress=False).path
    assert fields(out) == want


# --------------------------------------------------------------------------- safetensors

def st_file(path: Path, header, data: bytes = b"\0" * 64) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


ST_CASES = {
    "shape 2^60": ({"t": {"dtype": "F32", "shape": [2**60], "data_offsets": [0, 64]}}, "needs"),
    "shape 2^60 x 2^60 with matching offsets": (
        {"t": {"dtype": "F32", "shape": [2**60, 2**60], "data_offsets": [0, 2**122]}}, "lies at bytes"),
    "negative dim": ({"t": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 64]}}, "non-negative"),
    "float dim": ({"t": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}}, "non-negative integers"),
    "infinite dim": (b'{"t": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 16]}}', "non-negative integers"),
    "dtype list": ({"t": {"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}}, "dtype ['F32']"),
    "offsets as strings": ({"t": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}, "data_offsets"),
    "offsets reversed": ({"t": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}, "lies at bytes"),
    "entry not an object": ({"t": [1, 2]}, "malformed header entry"),
    "metadata a list": ({"__metadata__": [1], "t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, "__metadata__"),
    "deep nesting": (b"[" * 100000 + b"]" * 100000, "too deeply"),
    "not an object": (b"[1, 2]", "not a JSON object"),
    "100k dims": ({"t": {"dtype": "F32", "shape": [1] * 100000, "data_offsets": [0, 8]}}, "needs"),
    "overlap": ({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]},
                 "b": {"dtype": "F32", "shape": [8], "data_offsets": [16, 48]}}, "overlap"),
}


@pytest.mark.parametrize("case", list(ST_CASES))
def test_safetensors_damage_is_named_and_allocates_nothing(case, tmp_path):
    header, match = ST_CASES[case]
    p = st_file(tmp_path / "model.safetensors", header)
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as e:
            SafetensorsFile(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    msg = e.value.message
    assert "model.safetensors" in msg and match in msg and e.value.hint, msg
    assert "\n" not in msg and len(msg) < 400


# --------------------------------------------------------------------------- config.json and tokenizer files

CONFIG_CASES = [
    ("num_hidden_layers", 2**63), ("vocab_size", -5), ("hidden_size", "64"), ("tie_word_embeddings", "false"),
    ("rms_norm_eps", 1e308), ("architectures", "LlamaForCausalLM"), ("num_attention_heads", 0),
    ("head_dim", 3), ("max_position_embeddings", 2**40), ("rope_scaling", [1]), ("rope_theta", float("nan")),
    ("rope_scaling", {"rope_type": "linear"}), ("rope_scaling", {"rope_type": "yarn", "factor": "4"}),
    ("rope_scaling", {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1}),
    ("num_key_value_heads", 3), ("intermediate_size", 1.5), ("text_config", "x"), ("num_local_experts", -1),
]


@pytest.mark.parametrize("key,value", CONFIG_CASES, ids=[f"{k}={str(v)[:20]}" for k, v in CONFIG_CASES])
def test_config_json_damage_names_the_key(ck, tmp_path, key, value):
    import shutil

    from ggtool.sources import open_source

    d = shutil.copytree(ck, tmp_path / "ck")
    cfg = json.loads((d / "config.json").read_text())
    cfg[key] = value
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError) as e:
        open_source(d).metadata()
    assert "config.json" in e.value.message and e.value.hint, e.value.message
    assert key.split("_")[0] in e.value.message or key == "num_key_value_heads", e.value.message


TOKENIZER_CASES = [
    ("tokenizer_config.json", {"chat_template": 5}, "chat_template"),
    ("tokenizer_config.json", {"chat_template": [{"name": 1}]}, "chat_template"),
    ("generation_config.json", [], "not a JSON object"),
    ("special_tokens_map.json", "[[[" * 10, "not valid JSON"),
    ("tokenizer.json", b"\xff\xfe{}", "not UTF-8"),
    ("tokenizer.json", "[" * 100000 + "]" * 100000, "too deeply"),
    ("chat_template.jinja", b"\xc3", "not UTF-8"),
    ("tokenizer_config.json", '{"chat_template": "\\ud800"}', "surrogate"),   # campaign seed 1, tokenizer #243
]


@pytest.mark.parametrize("name,content,match", TOKENIZER_CASES, ids=[f"{n}-{m}" for n, _, m in TOKENIZER_CASES])
def test_tokenizer_file_damage_names_the_file(ck, tmp_path, name, content, match):
    import shutil

    from ggtool.sources import open_source

    d = shutil.copytree(ck, tmp_path / "ck")
    if name == "chat_template.jinja":
        tc = json.loads((d / "tokenizer_config.json").read_text())
        tc.pop("chat_template")
        (d / "tokenizer_config.json").write_text(json.dumps(tc))
    if isinstance(content, bytes):
        (d / name).write_bytes(content)
    elif isinstance(content, str):
        (d / name).write_text(content)
    else:
        base = json.loads((d / name).read_text()) if (d / name).exists() and isinstance(content, dict) else {}
        (d / name).write_text(json.dumps({**base, **content} if isinstance(content, dict) else content))
    with pytest.raises(GgtoolError) as e:
        open_source(d).metadata()
    assert name in e.value.message and match in e.value.message and e.value.hint, e.value.message


@pytest.mark.parametrize("damage", ["truncated", "varint", "nan score"])
def test_tokenizer_model_damage(tmp_path, damage):
    from ggtool.sources import open_source
    from fuzz.mutators import SPM_SPEC, dump_proto, parse_proto

    d = tm.make_checkpoint(tmp_path / "ck", "mistral", hidden=32, layers=1, heads=2, kv_heads=1, tokenizer="spm")
    data = (d / "tokenizer.model").read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "varint":
        data = data[:10] + b"\xff" * 11
    else:
        msg = parse_proto(data, SPM_SPEC)
        piece = next(f for f in msg if f[0] == 1)[2]
        next(f for f in piece if f[0] == 2)[2] = struct.pack("<f", float("nan"))
        data = dump_proto(msg)
    (d / "tokenizer.model").write_bytes(data)
    with pytest.raises(GgtoolError) as e:
        open_source(d).metadata()
    assert "tokenizer.model" in e.value.message and e.value.hint, e.value.message


# --------------------------------------------------------------------------- properties (hypothesis)

@pytest.fixture(scope="module")
def f16_layout(f16):
    from fuzz.mutators import gguf_layout

    data = f16.read_bytes()
    return data, [f for f in gguf_layout(data).fields if f.width in (4, 8) and f.kind != "str"]


@SETTINGS
@given(pick=st.integers(0, 10**6), value=st.integers(0, 2**64 - 1))
def test_any_value_in_any_gguf_header_number(f16_layout, tmp_path_factory, pick, value):
    """Any number in any header field (counts, lengths, types, dims, offsets): the reader parses
    the file or raises CorruptFile; never anything else, never a big allocation."""
    data, fields = f16_layout
    f = fields[pick % len(fields)]
    b = bytearray(data)
    b[f.off: f.off + f.width] = (value & ((1 << (8 * f.width)) - 1)).to_bytes(f.width, "little")
    p = tmp_path_factory.mktemp("prop") / "model.gguf"
    p.write_bytes(bytes(b))
    tracemalloc.start()
    try:
        GGUFFile(p).close()
    except CorruptFile as e:
        assert "model.gguf" in e.message and "\n" not in e.message
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < len(data) * 4 + (8 << 20)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=8)


@SETTINGS
@given(shape=json_values, offsets=json_values, dtype=json_values)
def test_any_safetensors_header_entry(tmp_path_factory, shape, offsets, dtype):
    p = st_file(tmp_path_factory.mktemp("prop") / "model.safetensors",
                {"t": {"dtype": dtype, "shape": shape, "data_offsets": offsets}})
    try:
        f = SafetensorsFile(p)
        for name in f.entries:
            f.float32(name)
        f.close()
    except InputError as e:
        assert "model.safetensors" in e.message and "\n" not in e.message and e.hint


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(["hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers",
                            "intermediate_size", "vocab_size", "head_dim", "rope_theta", "rope_scaling",
                            "tie_word_embeddings", "architectures", "max_position_embeddings", "rms_norm_eps"]),
       value=json_values)
def test_any_value_for_a_config_json_key(ck, tmp_path_factory, key, value):
    import shutil

    from ggtool.sources import open_source

    d = shutil.copytree(ck, tmp_path_factory.mktemp("prop") / "ck")
    cfg = json.loads((d / "config.json").read_text())
    cfg[key] = value
    (d / "config.json").write_text(json.dumps(cfg))
    try:
        src = open_source(d)
        src.metadata()
        src.close()
    except InputError as e:
        assert "config.json" in e.message and e.hint, e.message


# --------------------------------------------------------------------------- the last line of defence

def test_a_bug_is_one_line_whatever_the_exception_says(ck, tmp_path, monkeypatch, capsys):
    import ggtool.convert

    def boom(*a, **k):
        raise RuntimeError("first line\nsecond line\n" + "x" * 5000)

    monkeypatch.setattr(ggtool.convert, "convert", boom)
    code, out, err = run_cli(capsys, "convert", ck, "-o", tmp_path / "a.gguf")
    assert code == EXIT_BUG and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Error: internal error (a bug in ggtool")
    assert "first line second line" in lines[0] and len(lines[0]) < 500
    assert lines[1].startswith("Hint: ") and "GGTOOL_DEBUG=1" in lines[1]


def test_the_process_exits_70_on_a_bug_and_1_on_bad_input(ck, tmp_path):
    """What a shell sees: `python -m ggtool` with a bug injected exits 70 (EX_SOFTWARE) with one
    Error line; with a damaged file it exits 1."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("GGTOOL_DEBUG", None)
    code = ("import sys, ggtool.convert as c\n"
            "def boom(*a, **k): raise KeyError('not a GgtoolError')\n"
            "c.convert = boom\n"
            "from ggtool.cli import main\n"
            f"main(['convert', {str(ck)!r}, '-o', {str(tmp_path / 'a.gguf')!r}])\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 70 and "Traceback" not in r.stderr, r.stderr
    assert [ln[:7] for ln in r.stderr.splitlines()] == ["Error: ", "Hint: r"] and "GGTOOL_DEBUG=1" in r.stderr
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 100)
    r = subprocess.run([sys.executable, "-m", "ggtool", "quantize", str(bad), str(tmp_path / "o.gguf"), "--quant", "Q8_0"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "Error: bad.gguf" in r.stderr and "Hint: " in r.stderr, r.stderr
    env["GGTOOL_DEBUG"] = "1"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" in r.stderr and "KeyError" in r.stderr
