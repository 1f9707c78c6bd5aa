"""Tokenizer metadata for GGUF: a Hugging Face tokenizer folder -> every tokenizer.* key llama.cpp reads.

Two families, as llama.cpp knows them:
- BPE from tokenizer.json (tokenizer.ggml.model "gpt2"): byte-level tokens, merges, and a
  pre-tokenizer name (tokenizer.ggml.pre) that picks llama.cpp's built-in split regexes.
- SentencePiece from tokenizer.model (tokenizer.ggml.model "llama"): pieces, scores, types.

The pre-tokenizer is named the way llama.cpp's own converter names it: sha256 of the token ids of
a fixed check text (CHKTXT). Freshly trained tokenizers have unknown hashes, so we also read the
pre-tokenizer's structure in tokenizer.json and map it to the llama.cpp name with the same split.
Only the `tokenizers` and `sentencepiece` libraries are used; no code from the model repo runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

import gguf
from gguf import TokenType

from .errors import CorruptFile, InputError

# llama.cpp's convert_hf_to_gguf.py check text, verbatim.
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ "
    "🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

# sha256(str(ids of CHKTXT)) -> tokenizer.ggml.pre, from llama.cpp's get_vocab_base_pre.
KNOWN_PRE_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed": "falcon",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "mpt",
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",
    "9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8": "command-r",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5/2/2.5/3
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3-Embedding
    "d30d75d9059f1aa2c19359de71047b3ae408c70875e8a3ccf8c5fba56c9d8af4": "qwen35",
    "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e": "dbrx",
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "c7ea5862a53e4272c035c8238367063e2b270d51faa48c0f09e9d5b54746c360": "poro-chat",
    "b6e8e1518dc4305be2fe39c313ed643381c4da5db34a98f6a04c093f8afbe99b": "chatglm-bpe",
    "81d72c7348a9f0ebe86f23298d37debe0a5e71149e29bd283904c02262b27516": "chatglm-bpe",
    "a1336059768a55c99a734006ffb02203cd450fed003e9a71886c88acf24fdbc2": "glm4",
    "7fc505bd3104ca1083b150b17d088b59534ede9bde81f0dd2090967d7fe52cee": "viking",
    "b53802fb28e26d645c3a310b34bfe07da813026ec7c7716883404d5e0f8b1901": "jais",
    "7b3e7548e4308f52a76e8229e4e6cc831195d0d1df43aed21ac6c93da05fec5f": "codeshell",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "3c30d3ad1d6b64202cd222813e7736c2db6e1bd6d67197090fc1211fbc612ae7": "bloom",
    "bc01ce58980e1db43859146dc51b1758b3b88729b217a74792e9f8d43e479d21": "gpt3-finnish",
    "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae": "exaone",
    "2085e1638f6c377a0aa4ead21b27bb4cb941bf800df86ed391011769c1758dfb": "exaone4",
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "60824e3c0d9401f89943cbb2fff727f0e2d4c545ba4df2d6e4f09a6db0f5b450": "chameleon",
    "1431a23e583c97432bc230bff598d103ddb5a1f89960c8f1d1051aaa944d0b35": "minerva-7b",
    "8b5a93ed704057481f240da0be7e7dca721d7f8f4755263b6807227a2cbeae65": "roberta-bpe",
    "ad851be1dba641f2e3711822f816db2c265f788b37c63b4e1aeacb9ee92de8eb": "gigachat",
    "d4c8f286ea6b520b3d495c4455483cfa2302c0cfcd4be05d781b6a8a0a7cdaf1": "megrez",
    "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5": "deepseek-v3",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",
    "7dec86086fcc38b66b7bc1575a160ae21cf705be7718b9d5598190d7c12db76f": "superbpe",
    "1994ffd01900cfb37395608534236ecd63f2bd5995d6cb1004dda1af50240f15": "trillion",
    "96a5f08be6259352137b512d4157e333e21df7edd3fcd152990608735a65b224": "bailingmoe",
    "d353350c764d8c3b39c763113960e4fb4919bea5fbf208a0e3b22e8469dc7406": "llama4",
    "0e9433cbbb161f89e264eb32e8e64bfe69e834973ffca5d41d3948a604a3e2a3": "pixtral",
    "d5f1dd6f980fec569fb218a81a7658ac45fc56b38c5a0adeb1c232fbe04ef5ec": "seed-coder",
    "a6b57017d60e6edb4d88ecc2845188e0eb333a70357e45dcc9b53964a73bbae6": "falcon-h1",
    "81212dc7cdb7e0c1074ca62c5aeab0d43c9f52b8a737be7b12a777c953027890": "kimi-k2",
    "169bf0296a13c4d9b7672313f749eb36501d931022de052aad6e36f2bf34dd51": "lfm2",
    "7e57df22b1fe23a7b1e1c7f3dc4e3f96d43a4eb0836d0c6bdc3436d7b2f1c664": "hunyuan",
}

# Split regexes as tokenizer.json spells them, for the llama.cpp pre-tokenizers that use them.
_CONTRACTIONS_CI = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_CONTRACTIONS_CI_LLAMACPP = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
_REGEX_PRE = {GPT2_REGEX: "gpt-2", GPT2_REGEX[: -len(r"|\s+")]: "gpt-2",
              LLAMA3_REGEX: "llama-bpe", QWEN2_REGEX: "qwen2"}

# Added tokens that llama.cpp's converter treats as control tokens even when not marked special.
_LOOKS_SPECIAL = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"}
_SPECIALS = ("bos", "eos", "unk", "pad", "sep")
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endofturn|>")
SUPPORTED_PRE_STRUCTURES = ("ByteLevel (GPT-2 regex) -> gpt-2", "Split(Llama-3 regex)+ByteLevel -> llama-bpe",
                            "Split(Qwen2 regex)+ByteLevel -> qwen2", "Digits(individual)+ByteLevel -> smollm")


@dataclass
class TokenizerSummary:
    model: str                      # "gpt2" (BPE) or "llama" (SentencePiece)
    pre: str                        # tokenizer.ggml.pre
    n_vocab: int
    n_merges: int = 0
    special: dict[str, int] = field(default_factory=dict)   # bos/eos/unk/pad/sep/eot/eom -> id
    add_bos: bool = False
    add_eos: bool = False
    chat_template: bool = False
    pre_source: str = ""            # "hash" or "structure" (how `pre` was found)
    notes: list[str] = field(default_factory=list)


def add_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, hparams: dict) -> TokenizerSummary:
    """Write every tokenizer key llama.cpp needs for the tokenizer in `model_dir`."""
    model_dir = Path(model_dir)
    spm_file, json_file = model_dir / "tokenizer.model", model_dir / "tokenizer.json"
    # A tokenizer.model that is not SentencePiece (tiktoken ranks, say) beside a tokenizer.json: use the json.
    if spm_file.is_file() and (not json_file.is_file() or _loads_as_spm(spm_file)):
        summ, tokens, types = _spm(writer, model_dir, hparams)
    elif json_file.is_file():
        summ, tokens, types = _bpe(writer, model_dir, hparams)
    else:
        raise InputError(f"no tokenizer.json or tokenizer.model in {model_dir}",
                         hint="download the tokenizer files of the checkpoint too")
    _add_specials(writer, model_dir, hparams, summ, tokens, types)
    return summ


# ------------------------------------------------------------------ BPE (tokenizer.json)

def pre_tokenizer_hash(tokenizer_json: Path, tok=None) -> str:
    """llama.cpp's chkhsh: sha256 of str(ids) of CHKTXT with special tokens added."""
    tok = tok or _load_tokenizer(Path(tokenizer_json))
    try:
        ids = tok.encode(CHKTXT).ids
    except Exception as e:  # a tokenizer that loads but cannot encode (the library's own error)
        raise CorruptFile(f"{Path(tokenizer_json).name} loads but cannot encode text: {' '.join(str(e).split())[:200]}",
                          hint="the file is damaged: download it again") from None
    return sha256(str(ids).encode()).hexdigest()


def pre_from_structure(tj: dict) -> str | None:
    """The llama.cpp pre-tokenizer that splits like tokenizer.json's pre_tokenizer, or None."""
    pt = tj.get("pre_tokenizer") or {}
    steps = pt.get("pretokenizers", []) if pt.get("type") == "Sequence" else [pt]
    kinds = [s.get("type") for s in steps]
    if not steps or kinds[-1] != "ByteLevel" or steps[-1].get("add_prefix_space", False):
        return None
    byte_regex = steps[-1].get("use_regex", True)
    if kinds == ["ByteLevel"] and byte_regex:
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_regex:
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not byte_regex:
        split = steps[0]
        pattern = split.get("pattern", {}).get("Regex")
        if split.get("behavior") != "Isolated" or split.get("invert") or pattern is None:
            return None
        return _REGEX_PRE.get(pattern.replace(_CONTRACTIONS_CI_LLAMACPP, _CONTRACTIONS_CI))
    return None


def _obj(v) -> dict:
    """A JSON value that should be an object; anything else reads as an empty one (the tokenizers
    library, which checks the file first, accepts some other shapes)."""
    return v if isinstance(v, dict) else {}


def _bpe(writer, model_dir: Path, hparams: dict):
    path = model_dir / "tokenizer.json"
    tj = _read_json(path)
    tok = _load_tokenizer(path)  # checks the file's structure before we read it
    model = _obj(tj.get("model"))
    decoder = _obj(tj.get("decoder"))
    if model.get("type") != "BPE" or decoder.get("type") not in ("ByteLevel", None):
        raise InputError(f"{path}: unsupported tokenizer model {model.get('type')!r} "
                         f"(decoder {decoder.get('type')!r})",
                         hint="ggtool converts byte-level BPE tokenizer.json files, or SentencePiece "
                              "checkpoints that ship tokenizer.model")
    chkhsh = pre_tokenizer_hash(path, tok)
    notes = []
    if chkhsh in KNOWN_PRE_HASHES:
        pre, source = KNOWN_PRE_HASHES[chkhsh], "hash"
    else:
        pre, source = pre_from_structure(tj), "structure"
        if pre is None:
            shown = json.dumps(tj.get("pre_tokenizer"))[:300]
            raise InputError(
                f"unknown BPE pre-tokenizer in {path} (chkhsh {chkhsh}): {shown}",
                hint="llama.cpp must split text the same way; recognised structures: "
                     + "; ".join(SUPPORTED_PRE_STRUCTURES))
        if pre == "llama-bpe" and not model.get("ignore_merges"):
            notes.append("llama-bpe implies ignore_merges, tokenizer.json has it off: rare tokens may differ")
        if tj.get("normalizer"):
            notes.append(f"normalizer {_obj(tj['normalizer']).get('type')} is not applied by llama.cpp")

    vocab: dict[str, int] = model.get("vocab") or {}
    added = {int(t["id"]): t for t in tj.get("added_tokens", [])}
    by_id: dict[int, str] = {i: t for t, i in vocab.items()}
    by_id.update({i: t["content"] for i, t in added.items()})
    n_vocab = _n_vocab(by_id, hparams, path)
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            text = by_id[i]
            if added[i].get("special") or _looks_special(text):
                types.append(TokenType.CONTROL)
            else:
                text = text.replace("\u2581", " ")  # pre-normalize user-defined spaces, as llama.cpp does
                types.append(TokenType.USER_DEFINED)
            tokens.append(text)
        else:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    summ = TokenizerSummary("gpt2", pre, n_vocab, len(merges), pre_source=source, notes=notes)
    summ.add_bos, summ.add_eos = _template_adds(tj)
    return summ, tokens, types


def _looks_special(text: str) -> bool:
    return (text in _LOOKS_SPECIAL or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>"))
            or (text.startswith("<unused") and text.endswith(">")))


def _template_adds(tj: dict) -> tuple[bool, bool]:
    """(add_bos, add_eos) from a TemplateProcessing post_processor (possibly inside a Sequence)."""
    pp = tj.get("post_processor") or {}
    procs = pp.get("processors", []) if pp.get("type") == "Sequence" else [pp]
    for p in procs:
        if p.get("type") == "TemplateProcessing":
            single = p.get("single") or []
            first = single[0].get("SpecialToken") if single else None
            last = single[-1].get("SpecialToken") if single else None
            return first is not None, last is not None and len(single) > 1
    return False, False


# ------------------------------------------------------------------ SentencePiece (tokenizer.model)

def _spm(writer, model_dir: Path, hparams: dict):
    from sentencepiece import SentencePieceProcessor

    path = model_dir / "tokenizer.model"
    try:
        sp = SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError, ValueError) as e:  # ValueError: its message is not UTF-8
        raise InputError(f"{path} is not a SentencePiece model: {' '.join(str(e).split())[:200]}",
                         hint="download tokenizer.model again") from None
    pieces, scores, types, add_dummy_prefix = read_spm_proto(path.read_bytes())
    if len(pieces) != sp.vocab_size():
        raise InputError(f"{path}: parsed {len(pieces)} pieces, sentencepiece says {sp.vocab_size()}")
    by_id = dict(enumerate(pieces))
    extra: dict[int, tuple[str, bool]] = {}   # id -> (content, special)
    for text, i in (_read_json(model_dir / "added_tokens.json") or {}).items():
        extra[_token_id(i, "added_tokens.json")] = (text, False)
    tc = _read_json(model_dir / "tokenizer_config.json") or {}
    decoder = tc.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise CorruptFile("tokenizer_config.json: added_tokens_decoder is not an object",
                          hint="the tokenizer file is damaged: download it again")
    for i, t in decoder.items():
        _, content, special = _token_entry(t, "tokenizer_config.json")
        extra[_token_id(i, "tokenizer_config.json")] = (content, special)
    tj = _read_json(model_dir / "tokenizer.json") or {}
    if tj:
        _load_tokenizer(model_dir / "tokenizer.json")  # checks its structure
    added_tokens = tj.get("added_tokens") or []
    if not isinstance(added_tokens, list):
        raise CorruptFile("tokenizer.json: added_tokens is not a list", hint="the tokenizer file is damaged: download it again")
    for t in added_tokens:
        i, content, special = _token_entry(t, "tokenizer.json")
        extra[_token_id(i, "tokenizer.json")] = (content, special)
    by_id.update({i: c for i, (c, _) in extra.items()})
    n_vocab = _n_vocab(by_id, hparams, path)
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    tok_scores = [-1000.0] * n_vocab
    tok_types = [int(TokenType.UNUSED)] * n_vocab
    for i, (p, s, t) in enumerate(zip(pieces, scores, types)):
        tokens[i], tok_scores[i], tok_types[i] = p, s, t
    for i, (text, special) in extra.items():
        if i < len(pieces) and text == pieces[i] and types[i] != TokenType.NORMAL:
            # already typed by the model (<s>, </s>, <unk>, user symbols); but a user-defined
            # piece the tokenizer config calls special is a control token (Gemma's turn markers,
            # as llama.cpp's converter types them)
            if types[i] == TokenType.USER_DEFINED and (special or _looks_special(text)):
                tok_types[i] = TokenType.CONTROL
            continue
        if special or _looks_special(text):
            tok_types[i] = TokenType.CONTROL
        else:
            text, tok_types[i] = text.replace("\u2581", " "), TokenType.USER_DEFINED
        tokens[i], tok_scores[i] = text, -1000.0

    add_prefix = tc.get("add_prefix_space")
    add_prefix = add_dummy_prefix if add_prefix is None else add_prefix
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(tok_scores)
    writer.add_token_types(tok_types)
    writer.add_add_space_prefix(bool(add_prefix))
    summ = TokenizerSummary("llama", "default", n_vocab, pre_source="sentencepiece")
    summ.add_bos, summ.add_eos = _template_adds(tj) if tj.get("post_processor") else (True, False)
    for name, sid in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unk", sp.unk_id()), ("pad", sp.pad_id())):
        if 0 <= sid < n_vocab:
            summ.special[name] = sid
    return summ, tokens, tok_types


def _loads_as_spm(path: Path) -> bool:
    from sentencepiece import SentencePieceProcessor

    try:
        SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError, ValueError):
        return False
    return True


def read_spm_proto(data: bytes) -> tuple[list[str], list[float], list[int], bool]:
    """(pieces, scores, types, add_dummy_prefix) from a SentencePiece ModelProto, without protobuf.

    ModelProto: 1 = repeated SentencePiece {1 piece, 2 score (float), 3 type}, 3 = NormalizerSpec
    {3 add_dummy_prefix}. Piece types use the same numbers as GGUF token types. As protobuf
    does, a known field with another wire type is skipped and an unknown type is NORMAL; what
    protobuf itself refuses (a truncated field, a bad wire type) is a CorruptFile.
    """
    import math
    import struct

    def fields(buf: bytes, where: str):
        pos = 0
        while pos < len(buf):
            at = pos
            key, pos = _varint(buf, pos, where)
            num, wire = key >> 3, key & 7
            if wire == 0:
                val, pos = _varint(buf, pos, where)
            elif wire in (1, 5):
                n = 8 if wire == 1 else 4
                val, pos = buf[pos:pos + n], pos + n
            elif wire == 2:
                n, pos = _varint(buf, pos, where)
                val, pos = buf[pos:pos + n], pos + n
            else:
                raise _spm_error(f"{where}: bad protobuf wire type {wire}", at)
            if pos > len(buf):
                raise _spm_error(f"{where}: field {num} runs past the end", at)
            yield num, wire, val

    pieces, scores, types, add_dummy_prefix = [], [], [], True
    for num, wire, val in fields(data, "model"):
        if num == 1 and wire == 2:
            i = len(pieces)
            piece, score, typ = "", 0.0, 1
            for n, w, v in fields(val, f"piece {i}"):
                if n == 1 and w == 2:
                    try:
                        piece = v.decode("utf-8")
                    except UnicodeDecodeError:
                        raise _spm_error(f"piece {i} is not valid UTF-8", None) from None
                elif n == 2 and w == 5:
                    score = struct.unpack("<f", v)[0]
                    if not math.isfinite(score):
                        raise _spm_error(f"piece {i} ({piece!r}) has score {score}", None)
                elif n == 3 and w == 0:
                    typ = v if 1 <= v <= 6 else 1  # protobuf: an unknown enum value reads as the default
            pieces.append(piece)
            scores.append(score)
            types.append(typ)
        elif num == 3 and wire == 2:
            for n, w, v in fields(val, "normalizer_spec"):
                if n == 3 and w == 0:
                    add_dummy_prefix = bool(v)
    return pieces, scores, types, add_dummy_prefix


def _spm_error(what: str, at: int | None) -> CorruptFile:
    return CorruptFile(f"tokenizer.model: {what}" + (f" (at byte {at})" if at is not None else ""),
                       hint="download tokenizer.model again")


def _varint(buf: bytes, pos: int, where: str = "model") -> tuple[int, int]:
    val = shift = 0
    start = pos
    while True:
        if pos >= len(buf) or pos - start >= 10:
            raise _spm_error(f"{where}: truncated or overlong varint", start)
        b = buf[pos]
        pos += 1
        val |= (b & 0x7F) << shift
        if b < 0x80:
            return val, pos
        shift += 7


# ------------------------------------------------------------------ special tokens, chat template

def _add_specials(writer, model_dir: Path, hparams: dict, summ: TokenizerSummary,
                  tokens: list[str], types: list[int]) -> None:
    tc = _read_json(model_dir / "tokenizer_config.json") or {}
    stm = _read_json(model_dir / "special_tokens_map.json") or {}
    gc = _read_json(model_dir / "generation_config.json") or {}
    token_id = {t: i for i, t in enumerate(tokens)}
    for name in _SPECIALS:
        tid = None
        for src in (tc, stm):
            text = src.get(f"{name}_token")
            text = text.get("content") if isinstance(text, dict) else text
            if isinstance(text, str) and text in token_id:
                tid = token_id[text]
                break
        if tid is None:
            for src in (hparams, gc):
                v = src.get(f"{name}_token_id")
                v = v[0] if isinstance(v, list) and v else v
                if isinstance(v, int) and not isinstance(v, bool):
                    tid = v
                    break
        if tid is None:
            tid = summ.special.get(name)
        if tid is not None and 0 <= tid < summ.n_vocab:
            summ.special[name] = tid
        elif tid is not None:
            summ.special.pop(name, None)
            summ.notes.append(f"{name} token id {tid} is outside the vocab ({summ.n_vocab}); left out")
    # end-of-turn / end-of-message: a control token with a well-known text that is not the eos
    eos = summ.special.get("eos")
    for text in _EOT_TEXTS:
        i = token_id.get(text)
        if i is not None and i != eos and types[i] == TokenType.CONTROL:
            summ.special["eot"] = i
            break
    if (i := token_id.get("<|eom_id|>")) is not None and types[i] == TokenType.CONTROL:
        summ.special["eom"] = i

    for name, tid in summ.special.items():
        getattr(writer, f"add_{name}_token_id")(tid)
    if isinstance(tc.get("add_bos_token"), bool):
        summ.add_bos = tc["add_bos_token"]
    if isinstance(tc.get("add_eos_token"), bool):
        summ.add_eos = tc["add_eos_token"]
    if summ.add_bos and "bos" not in summ.special:
        summ.notes.append("add_bos_token is set but there is no bos token; not adding it")
        summ.add_bos = False
    if summ.add_eos and "eos" not in summ.special:
        summ.add_eos = False
    writer.add_add_bos_token(summ.add_bos)
    writer.add_add_eos_token(summ.add_eos)

    template, where = tc.get("chat_template"), "tokenizer_config.json"
    jinja = model_dir / "chat_template.jinja"
    if template is None and jinja.is_file():
        try:
            template, where = jinja.read_bytes().decode("utf-8"), jinja.name
        except UnicodeDecodeError as e:
            raise CorruptFile(f"{jinja.name} is not UTF-8 text (byte {e.start})", hint="download it again") from None
    if template is None:
        template, where = (_read_json(model_dir / "chat_template.json") or {}).get("chat_template"), "chat_template.json"
    if template is not None and not _valid_template(template):
        raise CorruptFile(f"{where}: chat_template is {str(template)[:60]!r}; expected a string or a list of "
                          "{name, template} objects", hint="the tokenizer file is damaged: download it again")
    if template:
        writer.add_chat_template(template)
        summ.chat_template = True


def _valid_template(t) -> bool:
    """A chat template as tokenizer_config.json may hold it: a string, or named templates."""
    if isinstance(t, str):
        return True
    return isinstance(t, list) and all(isinstance(x, dict) and isinstance(x.get("name"), str)
                                       and isinstance(x.get("template"), str) for x in t)


def _n_vocab(by_id: dict[int, str], hparams: dict, path: Path) -> int:
    n_tok = max(by_id) + 1 if by_id else 0
    n_cfg = hparams.get("vocab_size") or n_tok
    if n_tok > n_cfg:
        raise InputError(f"{path} has token ids up to {n_tok - 1}, but config.json vocab_size is {n_cfg}",
                         hint="the tokenizer does not belong to this checkpoint, or config.json is wrong")
    return n_cfg


def _read_json(path: Path):
    """The JSON object in `path`, or None when there is no such file (errors name the file)."""
    from .sources.hf import read_json

    return read_json(path) if path.is_file() else None


def _load_tokenizer(path: Path):
    """tokenizers.Tokenizer from tokenizer.json; its errors (a plain Exception with serde's
    message, or a Rust panic) become a CorruptFile naming the file."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except BaseException as e:
        if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
            raise  # KeyboardInterrupt, SystemExit
        msg = " ".join(str(e).split())[:200]
        raise CorruptFile(f"{path.name} cannot be loaded by the tokenizers library: {msg}",
                          hint="the file is damaged or written for another library version: download it again") from None


def _token_id(v, where: str) -> int:
    """A token id from a tokenizer file: a non-negative integer (or its decimal string, as the
    keys of added_tokens_decoder are)."""
    if isinstance(v, str) and v.isdigit() and len(v) < 12:
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**31:
        raise CorruptFile(f"{where}: token id {str(v)[:40]!r} is not a non-negative integer",
                          hint="the tokenizer file is damaged: download it again")
    return v


def _token_entry(t, where: str) -> tuple[int, str, bool]:
    """(id, content, special) of an added token {"id", "content", "special"}."""
    if not isinstance(t, dict) or not isinstance(t.get("content"), str):
        raise CorruptFile(f"{where}: an added token is {str(t)[:60]!r}; expected an object with a content string",
                          hint="the tokenizer file is damaged: download it again")
    return _token_id(t.get("id"), where) if "id" in t else -1, t["content"], bool(t.get("special"))
