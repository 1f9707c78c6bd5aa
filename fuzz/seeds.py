"""Valid inputs to mutate, built from the tiny generated models (tests/tinymodels).

`build(folder)` writes one sub-folder per seed and returns {seed name: folder}:
  ck-*      Hugging Face checkpoint folders (config.json, tokenizer files, *.safetensors),
            one per tokenizer kind (gpt2, llama3, qwen2, smollm, spm), dtypes and sharding varied
  gguf-*    model.gguf converted by ggtool from ck-gpt2 (F16, Q8_0, Q4_0, an spm vocabulary),
            and gguf-kinds: F32 plus one key of every GGUF value type, arrays of each, nested arrays
Everything is seeded, so two builds give the same files. Models are tiny (hidden 32, one
layer, 1000 tokens): a mutant runs in milliseconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TINY = dict(hidden=32, layers=1, heads=2, kv_heads=1)

CHECKPOINTS = {
    "ck-gpt2": dict(arch="llama", tokenizer="gpt2", dtype="bfloat16"),
    "ck-llama3": dict(arch="llama", tokenizer="llama3", dtype="float16", shards=2, rope_scaling="llama3"),
    "ck-qwen2": dict(arch="qwen2", tokenizer="qwen2", dtype="float32"),
    "ck-smollm": dict(arch="qwen3", tokenizer="smollm", dtype="bfloat16", tied=True),
    "ck-spm": dict(arch="mistral", tokenizer="spm", dtype="float16"),
    # the families with twists (tests/tinymodels.make_family_checkpoint)
    "ck-gemma2": dict(family="gemma2"),
    "ck-gemma3": dict(family="gemma3", dtype="bfloat16"),
    "ck-phi3": dict(family="phi3"),
    "ck-mixtral": dict(family="mixtral", experts=4),
    "ck-qwen3moe": dict(family="qwen3moe", experts=4),
}
GGUFS = {  # seed -> (checkpoint, mix, rules)
    "gguf-f16": ("ck-gpt2", "F16", "plain"),
    "gguf-q8_0": ("ck-gpt2", "Q8_0", "llama.cpp"),
    "gguf-q4_0": ("ck-smollm", "Q4_0", "llama.cpp"),
    "gguf-spm": ("ck-spm", "F16", "plain"),
    "gguf-kinds": ("ck-gpt2", "F32", "plain"),
}
HUB = {"hub-st": "test/tiny-llama", "hub-gguf": "test/tiny-GGUF:Q8_0"}   # seed -> what to pull
IMATRIX = {"imatrix-gguf": "imatrix.gguf", "imatrix-dat": "imatrix.dat"}  # beside gguf-f16's model
# A tool-calling template in the style of recent instruct models, written for these tests.
TOOLS_TEMPLATE = (
    "{%- macro render(m) -%}<|{{ m['role'] }}|>{{ m['content'] | trim }}{%- if m.tool_calls is defined -%}"
    "{%- for c in m.tool_calls %}<tool_call>{{ c | tojson }}</tool_call>{% endfor -%}{%- endif -%}<|end|>\n"
    "{%- endmacro -%}{{ bos_token }}{%- set ns = namespace(system='', n=0) -%}"
    "{%- if messages[0]['role'] == 'system' -%}{%- set ns.system = messages[0]['content'] -%}"
    "{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- if tools %}<|tools|>{{ tools | tojson(indent=2) }}<|end|>{% endif -%}"
    "{%- if ns.system %}<|system|>{{ ns.system }}<|end|>\n{% endif -%}"
    "{%- for m in loop_messages -%}{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('roles must alternate user/assistant') }}{%- endif -%}{%- set ns.n = ns.n + 1 -%}"
    "{{ render(m) }}{%- endfor -%}{%- if add_generation_prompt %}<|assistant|>{% endif -%}"
)


def every_value_type() -> list[tuple[str, object, object, object]]:
    """(key, value, GGUFValueType, sub_type): one key of each scalar type, an array of each,
    an empty array and nested arrays (arrays of arrays are valid GGUF)."""
    from gguf import GGUFValueType as V

    scalars = [(V.UINT8, 200), (V.INT8, -100), (V.UINT16, 60000), (V.INT16, -30000),
               (V.UINT32, 4_000_000_000), (V.INT32, -2_000_000_000), (V.FLOAT32, 1.5),
               (V.UINT64, 2**63 + 5), (V.INT64, -(2**62)), (V.FLOAT64, -2.25), (V.BOOL, True),
               (V.STRING, "ünïcode ✓")]
    out = []
    for t, v in scalars:
        name = t.name.lower()
        out.append((f"fuzz.{name}", v, t, None))
        out.append((f"fuzz.array.{name}", [v, v, v] if t != V.BOOL else [True, False, True], V.ARRAY, t))
    out.append(("fuzz.array.empty", [], V.ARRAY, V.UINT32))
    out.append(("fuzz.array.nested", [[1, 2, 3], [4, 5]], V.ARRAY, V.ARRAY))
    out.append(("fuzz.array.nested_strings", [["a", "bc"], ["déf"]], V.ARRAY, V.ARRAY))
    return out


def build(folder: str | Path, only: set[str] | None = None) -> dict[str, Path]:
    """Write the seeds (or those named in `only`, with the checkpoints they need) under `folder`."""
    from ggtool.convert import convert
    from ggtool.sources import open_source
    from tests import tinymodels as tm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    want = (set(CHECKPOINTS) | set(GGUFS) | set(HUB) | set(IMATRIX) | set(chat_templates())
            if only is None else set(only))
    if want & set(HUB):
        want |= {"ck-gpt2", "gguf-q8_0"}   # what the local Hub serves (fuzz/hubfuzz.py)
    if want & set(IMATRIX):
        want |= {"gguf-f16"}
    want |= {GGUFS[g][0] for g in want if g in GGUFS}
    out: dict[str, Path] = {}
    for name, spec in CHECKPOINTS.items():
        if name not in want:
            continue
        d = folder / name
        if not (d / "config.json").is_file():
            shutil.rmtree(d, ignore_errors=True)
            spec = dict(spec)
            if "family" in spec:
                tm.make_family_checkpoint(d, spec.pop("family"), hidden=32, layers=2, heads=2, kv_heads=1, **spec)
            else:
                tm.make_checkpoint(d, spec.pop("arch"), **TINY, **spec)
        out[name] = d
    for name, (ck, mix, rules) in GGUFS.items():
        if name not in want:
            continue
        d = folder / name
        f = d / "model.gguf"
        if not f.is_file():
            d.mkdir(exist_ok=True)
            src = open_source(out[ck])
            if name == "gguf-kinds":
                collect = src.metadata

                def metadata():
                    md = collect()
                    for key, value, vtype, sub in every_value_type():
                        md.add_key_value(key, value, vtype, sub_type=sub)
                    return md

                src.metadata = metadata
            convert(out[ck], f, mix, rules=rules, source=src, progress=False, threads=1)
        out[name] = d
    if want & set(HUB):
        from . import hubfuzz

        hub = hubfuzz.start(folder)
        try:
            for name, what in HUB.items():
                d = folder / name
                d.mkdir(exist_ok=True)
                for kind, data in hubfuzz.api_answers(hub, what.split(":")[0]).items():
                    (d / f"{kind}.json").write_bytes(data)
                (d / "pull.txt").write_text(what + "\n")
                out[name] = d
        finally:
            hub.stop()
    for name, file in IMATRIX.items():
        if name in want:
            d = folder / name
            d.mkdir(exist_ok=True)
            if not (d / file).is_file():
                shutil.copyfile(out["gguf-f16"] / "model.gguf", d / "model.gguf")
                write_imatrix(d / "model.gguf", d / file)
            out[name] = d
    for name, text in chat_templates().items():
        if name in want:
            d = folder / name
            d.mkdir(exist_ok=True)
            (d / "template.jinja").write_text(text, encoding="utf-8")
            out[name] = d
    return out


def chat_templates() -> dict[str, str]:
    """Chat template seeds: ggtool's built-in ones, the tiny tokenizers' ChatML, a tool-calling one."""
    from ggtool.chat.templates import BUILTIN
    from tests.tinytokenizers import CHATML

    out = {f"chat-{k}": v[0] for k, v in BUILTIN.items() if k != "chatml"}
    out["chat-chatml"] = CHATML
    out["chat-tools"] = TOOLS_TEMPLATE
    return out


def materialize(seed_dir: Path | None, files: dict[str, bytes], dest: Path) -> Path:
    """A mutant as a folder: `files` written as given, every other file of the seed linked."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in seed_dir.iterdir() if seed_dir is not None else ():
        if p.is_file() and p.name not in files:
            (dest / p.name).symlink_to(p.resolve())
    for name, data in files.items():
        (dest / name).write_bytes(data)
    return dest


def write_imatrix(model: Path, path: Path) -> None:
    """A seeded imatrix for every matrix of `model` that llama-quantize weights: llama.cpp's
    GGUF format through ggtool's writer, or the legacy .dat written here byte by byte."""
    import struct

    import numpy as np

    from ggtool.formats import imatrix
    from ggtool.formats.gguf_reader import GGUFFile

    f = GGUFFile(model)
    shapes = {t.name: t.shape for t in f.tensors if len(t.shape) == 2 and t.name != "token_embd.weight"}
    f.close()
    rng = np.random.default_rng(0)
    im = imatrix.IMatrix(datasets=["fuzz.txt"], chunk_count=3, chunk_size=64)
    for name, shape in sorted(shapes.items()):
        im.entries[name] = imatrix.Entry(rng.uniform(0.1, 5, (1, shape[-1])).astype(np.float32) * 192,
                                         np.array([192.0]))
    if path.suffix == ".gguf":
        imatrix.write_gguf(im, path)
        return
    out = [struct.pack("<i", len(im.entries))]
    for name, e in im.entries.items():
        vals = (e.sums / e.counts[:, None] * 3).reshape(-1).astype("<f4")  # values = mean * ncall
        out += [struct.pack("<i", len(name)), name.encode(), struct.pack("<ii", 3, vals.size), vals.tobytes()]
    out += [struct.pack("<i", 3), struct.pack("<i", 8), b"fuzz.txt"]
    path.write_bytes(b"".join(out))
