"""Small real tokenizers, trained in well under a second on Alice in Wonderland.

`make_tokenizer(kind, out_dir)` writes the tokenizer files of a Hugging Face checkpoint
(tokenizer.json or tokenizer.model, tokenizer_config.json with a ChatML template) and returns
the vocab size (highest token id + 1). Each kind copies the tokenizer structure of a real model
family, so that llama.cpp's pre-tokenizer of that name splits text exactly like it:

  gpt2    ByteLevel BPE (GPT-2 regex)                          -> pre "gpt-2"
  llama3  Split(Llama-3 regex) + ByteLevel, ignore_merges, BOS -> pre "llama-bpe"
  qwen2   NFC + Split(Qwen2 regex) + ByteLevel                 -> pre "qwen2"
  smollm  Digits(individual) + ByteLevel                       -> pre "smollm"
  spm     SentencePiece BPE, byte fallback, Llama-2 style      -> tokenizer.model, "llama"
  gemma   SentencePiece BPE as Gemma's: no dummy prefix, <pad> <eos> <bos> <unk> at 0-3, turn
          markers user-defined in the model but special in tokenizer_config, Gemma template
  phi3    the spm kind plus Phi-3's chat tokens added after the model's pieces (special)
"""

from __future__ import annotations

import io
import json
from pathlib import Path



DATA = Path(__file__).resolve().parent / "data"  # alice29.txt, code.utf8: see data/README.md
KINDS = ("gpt2", "llama3", "qwen2", "smollm", "spm")
FAMILY_KINDS = ("gemma", "phi3")   # used by tests/test_families.py
VOCAB = 1000

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
# Non-special added tokens (USER_DEFINED in GGUF): matched anywhere in text, never split.
USER_TOKENS = ["<think>", "</think>"]

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")


def corpus_text() -> str:
    """Alice, plus 30 kB of code (data/code.utf8) so the vocab learns digit runs, indentation and
    newline runs: where pre-tokenizers differ (a tokenizer trained on prose alone would tokenize
    the same under most of them, and the llama.cpp comparison would prove little)."""
    alice = (DATA / "alice29.txt").read_text(encoding="utf-8", errors="replace")
    code = (DATA / "code.utf8").read_text(encoding="utf-8", errors="replace")[:30000]
    return alice + "\n\n" + code


def corpus_chunks() -> list[str]:
    """Paragraph-sized pieces that keep their inner newlines and indentation."""
    return [c for c in corpus_text().split("\n\n") if c.strip()]


def make_tokenizer(kind: str, out_dir: Path, vocab_size: int = VOCAB) -> int:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "spm":
        return _make_spm(out_dir, vocab_size)
    if kind == "gemma":
        return _make_gemma(out_dir, vocab_size)
    if kind == "phi3":
        return _make_phi3(out_dir, vocab_size)
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose from {KINDS + FAMILY_KINDS}")
    return _make_bpe(kind, out_dir, vocab_size)


def _make_bpe(kind: str, out_dir: Path, vocab_size: int) -> int:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import processors, trainers

    bos = "<|begin_of_text|>" if kind == "llama3" else None
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + ([bos] if bos else [])
    tok = Tokenizer(models.BPE(ignore_merges=(kind == "llama3")))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=kind in ("gpt2", "smollm"))
    if kind == "gpt2":
        tok.pre_tokenizer = byte_level
    elif kind == "smollm":
        digits = pre_tokenizers.Digits(individual_digits=True)
        tok.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level])
    else:
        regex = LLAMA3_REGEX if kind == "llama3" else QWEN2_REGEX
        split = pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False)
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_chunks(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in USER_TOKENS])
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(str(out_dir / "tokenizer.json"))
    cfg = {
        "bos_token": bos, "eos_token": "<|im_end|>", "unk_token": None, "pad_token": "<|endoftext|>",
        "add_bos_token": bool(bos), "add_eos_token": False, "chat_template": CHATML,
        "model_max_length": 2048, "tokenizer_class": "PreTrainedTokenizerFast",
    }
    _write_json(out_dir / "tokenizer_config.json", cfg)
    return tok.get_vocab_size(with_added_tokens=True)


def _make_spm(out_dir: Path, vocab_size: int) -> int:
    import sentencepiece as spm

    model = io.BytesIO()
    # Llama-2's tokenizer.model settings: identity normalization, whitespace kept as is,
    # digits split, byte fallback; <s> </s> <unk> at 1 2 0.
    lines = [line for line in corpus_text().splitlines() if line.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        character_coverage=1.0, byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        control_symbols=["<|im_start|>", "<|im_end|>"], user_defined_symbols=USER_TOKENS,
        num_threads=1, minloglevel=2,
    )
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    cfg = {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "add_bos_token": True, "add_eos_token": False, "chat_template": CHATML,
        "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer", "legacy": True,
    }
    _write_json(out_dir / "tokenizer_config.json", cfg)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return sp.vocab_size()


GEMMA_TEMPLATE = (  # written for these tests, in the shape of Gemma's
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
GEMMA_TURN_TOKENS = ["<start_of_turn>", "<end_of_turn>"]


def _make_gemma(out_dir: Path, vocab_size: int) -> int:
    import sentencepiece as spm

    model = io.BytesIO()
    lines = [line for line in corpus_text().splitlines() if line.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        character_coverage=1.0, byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", add_dummy_prefix=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=["<mask>", *GEMMA_TURN_TOKENS, *USER_TOKENS],
        num_threads=1, minloglevel=2,
    )
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    decoder = {str(sp.piece_to_id(t)): {"content": t, "special": t not in ("<mask>", *USER_TOKENS),
                                        "lstrip": False, "rstrip": False, "normalized": False,
                                        "single_word": False}
               for t in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", *GEMMA_TURN_TOKENS, *USER_TOKENS)}
    cfg = {
        "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
        "add_bos_token": True, "add_eos_token": False, "chat_template": GEMMA_TEMPLATE,
        "added_tokens_decoder": decoder, "model_max_length": 2048, "tokenizer_class": "GemmaTokenizer",
        "spaces_between_special_tokens": False,
    }
    _write_json(out_dir / "tokenizer_config.json", cfg)
    return sp.vocab_size()


PHI3_TOKENS = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]
PHI3_TEMPLATE = (  # written for these tests, in the shape of Phi-3's
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)


def _make_phi3(out_dir: Path, vocab_size: int) -> int:
    """Phi-3-mini's layout: a Llama-2 style tokenizer.model, chat tokens added after it."""
    import sentencepiece as spm

    model = io.BytesIO()
    lines = [line for line in corpus_text().splitlines() if line.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        character_coverage=1.0, byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
    )
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    n = spm.SentencePieceProcessor(model_proto=model.getvalue()).vocab_size()
    # as Phi-3-mini's: the chat tokens (and </s>) eat the whitespace after them
    decoder = {str(i): {"content": t, "special": True, "lstrip": False,
                        "rstrip": t not in ("<unk>", "<s>", "<|endoftext|>"),
                        "normalized": False, "single_word": False}
               for i, t in [(0, "<unk>"), (1, "<s>"), (2, "</s>")] + list(enumerate(PHI3_TOKENS, n))}
    cfg = {
        "bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>",
        "add_bos_token": False, "add_eos_token": False, "chat_template": PHI3_TEMPLATE,
        "added_tokens_decoder": decoder, "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer",
        "legacy": True,
    }
    _write_json(out_dir / "tokenizer_config.json", cfg)
    return n + len(PHI3_TOKENS)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
