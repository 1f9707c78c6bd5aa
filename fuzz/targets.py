"""One fuzz target per reader: which seeds it starts from, how it damages them, what it runs.

    @target("gguf", seeds=[...], mutate=lambda rng, seed: {"model.gguf": mutate_gguf(...)})
    def run_gguf(folder): ...     # in the worker: read folder/* with the library

`mutate(rng, seed)` returns the files it changed ({file name: bytes}); every other file of the
seed folder is linked in unchanged. `run(folder)` calls the library directly: it ends normally
or raises a GgtoolError; anything else is a bug. Adding a reader is one such pair here.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import mutators as m


class Seed:
    """A seed folder; its files' bytes and anything derived from them, read once."""

    def __init__(self, name: str, folder: Path):
        self.name, self.folder = name, Path(folder)
        self._bytes: dict[str, bytes] = {}
        self.cache: dict = {}

    def read(self, file: str) -> bytes:
        if file not in self._bytes:
            self._bytes[file] = (self.folder / file).read_bytes()
        return self._bytes[file]

    def files(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir() if p.is_file())


@dataclass
class Target:
    name: str
    seeds: list[str]
    mutate: Callable[..., dict[str, bytes]]
    run: Callable[[Path], None]
    about: str = ""
    budget: int = 500             # mutants in `make test`'s bounded pass
    names: tuple[str, ...] = ()   # besides file names: what naming the input may also say


TARGETS: dict[str, Target] = {}


def target(name: str, seeds: list[str], mutate, budget: int = 500, names: tuple[str, ...] = ()):
    def register(run):
        TARGETS[name] = Target(name, seeds, mutate, run, about=(run.__doc__ or "").strip(), budget=budget,
                               names=names)
        return run
    return register


# --------------------------------------------------------------------------- checks on success

def check_gguf_output(path: Path) -> None:
    """A GGUF that ggtool wrote from a damaged input must still be a valid GGUF: gguf-py (the
    independent reader) and ggtool's reader both parse it, with the same tensors."""
    import gguf

    from ggtool.formats.gguf_reader import GGUFFile

    r = gguf.GGUFReader(str(path))
    ours = GGUFFile(path)
    try:
        assert [t.name for t in r.tensors] == [t.name for t in ours.tensors], "tensor lists differ"
    finally:
        ours.close()
        del r


def convert_to(folder: Path, src: str, mix: str = "F16", rules: str = "plain") -> None:
    from ggtool.convert import convert

    out = folder / "out.gguf"
    convert(folder / src if src else folder, out, mix, rules=rules, progress=False, threads=1)
    check_gguf_output(out)


# --------------------------------------------------------------------------- GGUF

GGUF_SEEDS = ["gguf-f16", "gguf-q8_0", "gguf-q4_0", "gguf-spm", "gguf-kinds"]


def _mutate_gguf(rng, seed: Seed) -> dict[str, bytes]:
    data = seed.read("model.gguf")
    if "layout" not in seed.cache:
        seed.cache["layout"] = m.gguf_layout(data)
    lay = seed.cache["layout"]
    out = m.mutate_gguf(rng, data, lay)
    if rng.random() < 0.2:  # a second change on top (the seed's layout still holds if no length moved)
        try:
            out = m.mutate_gguf(rng, out, lay) if len(out) == len(data) else m.mutate_bytes(rng, out, 0, lay.header_end)
        except (struct.error, ValueError, IndexError, OverflowError):  # the first change broke what it reads
            out = m.mutate_bytes(rng, out, 0, lay.header_end)
    return {"model.gguf": out}


@target("gguf", GGUF_SEEDS, _mutate_gguf, budget=800)
def run_gguf(folder: Path) -> None:
    """ggtool.formats.gguf_reader (every key, every tensor's bytes), then the GGUF source through
    `quantize` (convert to Q8_0 with llama.cpp's rules): metadata copied, tensors dequantized."""
    from ggtool.formats.gguf_reader import GGUFFile
    from ggtool.plan.model import ModelInfo

    f = GGUFFile(folder / "model.gguf")
    try:
        for kv in f.kv.values():
            if isinstance(kv.value, list):
                list(kv.value)
        for t in f.tensors:
            f.raw(t)
    finally:
        f.close()
    ModelInfo.from_gguf(folder / "model.gguf")
    convert_to(folder, "model.gguf", "Q8_0", "llama.cpp")


# --------------------------------------------------------------------------- safetensors

ST_SEEDS = ["ck-gpt2", "ck-llama3", "ck-qwen2"]


def _mutate_st(rng, seed: Seed) -> dict[str, bytes]:
    name = rng.choice([f for f in seed.files() if f.endswith(".safetensors")])
    return {name: m.mutate_safetensors(rng, seed.read(name))}


@target("safetensors", ST_SEEDS, _mutate_st, budget=500)
def run_safetensors(folder: Path) -> None:
    """ggtool.formats.safetensors (header, every tensor as float32), then the checkpoint
    converted to F16."""
    from ggtool.formats.safetensors import SafetensorsFile

    for p in sorted(folder.glob("*.safetensors")):
        st = SafetensorsFile(p)
        try:
            for name in st.entries:
                st.float32(name)
        finally:
            st.close()
    convert_to(folder, "")


# --------------------------------------------------------------------------- config.json

CONFIG_KEYS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
               "vocab_size", "num_key_value_heads", "head_dim", "rope_theta", "rope_scaling",
               "architectures", "tie_word_embeddings", "max_position_embeddings", "rms_norm_eps",
               "bos_token_id", "eos_token_id", "rope_parameters", "factor", "rope_type",
               "num_local_experts", "num_experts", "num_experts_per_tok", "moe_intermediate_size",
               "sliding_window", "sliding_window_pattern", "layer_types", "query_pre_attn_scalar",
               "attn_logit_softcapping", "final_logit_softcapping", "rope_local_base_freq",
               "partial_rotary_factor", "original_max_position_embeddings", "long_factor", "short_factor",
               "text_config", "hidden_activation", "hidden_act", "decoder_sparse_step", "mlp_only_layers")
CK_SEEDS = ["ck-gpt2", "ck-llama3", "ck-qwen2", "ck-smollm", "ck-spm"]
FAMILY_SEEDS = ["ck-gemma2", "ck-gemma3", "ck-phi3", "ck-mixtral", "ck-qwen3moe"]


def _mutate_config(rng, seed: Seed) -> dict[str, bytes]:
    files = seed.files()
    if "model.safetensors.index.json" in files and rng.random() < 0.3:
        name = "model.safetensors.index.json"
        return {name: m.mutate_json(rng, seed.read(name), ("weight_map",))}
    return {"config.json": m.mutate_json(rng, seed.read("config.json"), CONFIG_KEYS)}


@target("config", CK_SEEDS + FAMILY_SEEDS, _mutate_config, budget=600)
def run_config(folder: Path) -> None:
    """config.json (and model.safetensors.index.json) -> hparams (ggtool.arch) -> convert to F16."""
    convert_to(folder, "")


# --------------------------------------------------------------------------- tokenizer files

TOKENIZER_KEYS = ("model", "vocab", "merges", "added_tokens", "pre_tokenizer", "post_processor",
                  "decoder", "normalizer", "type", "id", "content", "special", "pretokenizers",
                  "single", "bos_token", "eos_token", "pad_token", "chat_template",
                  "added_tokens_decoder", "add_bos_token", "add_eos_token", "bos_token_id",
                  "eos_token_id", "ignore_merges")
OPTIONAL_FILES = {  # tokenizer files the seeds lack, written from scratch before damage
    "special_tokens_map.json": b'{"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}}',
    "added_tokens.json": b'{"<extra>": 1000}',
    "chat_template.json": b'{"chat_template": "{{ messages }}"}',
}


def _mutate_tokenizer(rng, seed: Seed) -> dict[str, bytes]:
    have = [f for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json") if f in seed.files()]
    name = rng.choice(have * 3 + list(OPTIONAL_FILES))
    data = seed.read(name) if name in have else OPTIONAL_FILES[name]
    if rng.random() < 0.1:
        return {name: data}  # an optional file, valid
    return {name: m.mutate_json(rng, data, TOKENIZER_KEYS)}


@target("tokenizer", CK_SEEDS, _mutate_tokenizer, budget=400)
def run_tokenizer(folder: Path) -> None:
    """tokenizer.json / tokenizer_config.json / generation_config.json / special_tokens_map.json /
    added_tokens.json -> ggtool.tokenizer (GGUF tokenizer keys) -> convert to F16."""
    convert_to(folder, "")


# --------------------------------------------------------------------------- tokenizer.model

def _mutate_spm(rng, seed: Seed) -> dict[str, bytes]:
    return {"tokenizer.model": m.mutate_spm(rng, seed.read("tokenizer.model"))}


@target("spm", ["ck-spm"], _mutate_spm, budget=400)
def run_spm(folder: Path) -> None:
    """tokenizer.model (SentencePiece protobuf: sentencepiece, then ggtool's own parser) ->
    convert to F16."""
    convert_to(folder, "")


# --------------------------------------------------------------------------- Hub API answers

HUB_KEYS = ("sha", "siblings", "gated", "private", "id", "size", "oid", "lfs", "path", "type",
            "pointerSize", "rfilename")


def _mutate_hub(rng, seed: Seed) -> dict[str, bytes]:
    which = rng.choice(["info.json", "tree.json", "tree.json", "both"])
    out = {}
    for f in (["info.json", "tree.json"] if which == "both" else [which]):
        out[f] = m.mutate_json(rng, seed.read(f), HUB_KEYS)
    return out


_HUB = None


@target("hub", ["hub-st", "hub-gguf"], _mutate_hub, budget=200, names=("test/tiny-llama", "test/tiny-GGUF", "Hub", "server", "config.json", "generation_config.json",
                                   "tokenizer.json", "tokenizer_config.json", "model.safetensors", "Tiny-Q8_0.gguf"))
def run_hub(folder: Path) -> None:
    """`ggtool pull` (plan, download, verify, convert or link, store) against a local Hub whose
    model-info or file-tree answer is damaged: missing fields, wrong types, absurd sizes, a
    malformed sha256 or commit id."""
    global _HUB
    from ggtool.hub import download, pull

    from . import hubfuzz

    if _HUB is None:
        _HUB = hubfuzz.start(Path(os.environ["GGTOOL_FUZZ_SEEDS"]))
    _HUB.override = {"info": (folder / "info.json").read_bytes(), "tree": (folder / "tree.json").read_bytes()}
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HOME"):
        os.environ.pop(k, None)
    os.environ.update({"HF_ENDPOINT": _HUB.url, "HF_HUB_CACHE": str(folder / "hf"),
                       "GGTOOL_HOME": str(folder / "home"), "GGTOOL_CACHE": str(folder / "cache"),
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "5"})
    download.BACKOFF, download.BACKOFF_MAX, download.RETRIES = 0.01, 0.02, 2
    what = (folder / "pull.txt").read_text().strip()
    pull.pull(what, None if ":" in what else "Q8_0", progress=False, threads=1)


# --------------------------------------------------------------------------- chat templates

def _mutate_chat(rng, seed: Seed) -> dict[str, bytes]:
    return {"template.jinja": m.mutate_jinja(rng, seed.read("template.jinja"))}


@target("chat", ["chat-chatml", "chat-llama3", "chat-mistral", "chat-gemma", "chat-tools"], _mutate_chat,
        budget=300, names=("chat template",))
def run_chat(folder: Path) -> None:
    """ggtool.chat.templates: a GGUF's tokenizer.chat_template (damaged: broken syntax, loops,
    recursion, huge strings and numbers, hostile attribute access) chosen and rendered for a
    short conversation, as `ggtool chat` does at start."""
    from ggtool.chat import templates

    text = (folder / "template.jinja").read_bytes().decode("utf-8", "replace")
    tpl = templates.from_metadata({"tokenizer.chat_template": text}, "<s>", "</s>", model_name="model.gguf")
    tpl.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Why?"}])


# --------------------------------------------------------------------------- imatrix files

def _mutate_imatrix(rng, seed: Seed) -> dict[str, bytes]:
    if seed.name == "imatrix-dat":
        return {"imatrix.dat": m.mutate_dat(rng, seed.read("imatrix.dat"))}
    data = seed.read("imatrix.gguf")
    if "layout" not in seed.cache:
        seed.cache["layout"] = m.gguf_layout(data)
    return {"imatrix.gguf": m.mutate_gguf(rng, data, seed.cache["layout"])}


@target("imatrix", ["imatrix-gguf", "imatrix-dat"], _mutate_imatrix, budget=300)
def run_imatrix(folder: Path) -> None:
    """ggtool.formats.imatrix (llama.cpp's GGUF imatrix and the legacy .dat), then a quantize of
    the model it belongs to with it (Q4_0, llama.cpp's rules with an imatrix)."""
    from ggtool.convert import convert
    from ggtool.formats import imatrix

    path = next(p for p in (folder / "imatrix.gguf", folder / "imatrix.dat") if p.exists())
    im = imatrix.read(path)
    im.digest()
    convert(folder / "model.gguf", folder / "out.gguf", "Q4_0", rules="llama.cpp", imatrix=path,
            progress=False, threads=1)
    check_gguf_output(folder / "out.gguf")


# --------------------------------------------------------------------------- the harness itself

@target("_selftest", [], lambda rng, seed: {}, budget=0)
def run_selftest(folder: Path) -> None:
    """Does what folder/mode says, so tests can check that the harness catches each kind of
    bug: another exception, an error without a hint, a hang, an allocation past the limit, a
    dead worker. Not a reader; never part of a campaign (its name starts with '_')."""
    import os
    import time

    from ggtool.errors import CorruptFile, InputError

    mode = (folder / "mode").read_text().strip()
    if mode == "ok":
        return
    if mode == "error":
        raise CorruptFile(f"{folder.name}/mode: a fine error")
    if mode == "no-hint":
        raise InputError(f"{folder.name}: an error without a hint")
    if mode == "exception":
        raise ValueError("not a GgtoolError")
    if mode == "alloc":
        bytearray(1 << 40)
    if mode == "hang":
        while True:
            time.sleep(0.01)
    if mode == "abort":
        os.abort()
