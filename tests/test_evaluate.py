"""The evaluation core (ggtool.evaluate): llama-perplexity-style chunks, perplexity, KLD.

Oracles: a numpy float64 forward pass of the HF checkpoint (tests/reference_forward.py) for
perplexity; llama.cpp's logits through llama-cpp-python's high-level `Llama` (ggtool.llamacpp.logits,
a different code path from ggtool's low-level runner) + numpy for KLD; numpy for the statistics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ggtool import evaluate
from ggtool.errors import InputError
from ggtool.evalstats import KLDStats, PPLStats
from tests import tinymodels as tm


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def oracle_logits(path, ids):
    from oracles.llamacpp import logits

    return logits(path, [int(i) for i in ids]).astype(np.float64)


# ---------------------------------------------------------------------------- pure parts

def test_chunking_replaces_first_token_by_bos_and_scores_the_second_half():
    toks = np.arange(100, 100 + 40, dtype=np.int32)
    ch = evaluate.chunking(toks, 16, None, add_bos=True, bos=7)
    assert ch.n_chunks == 2 and ch.first == 8 and ch.n_scored == 7
    c1 = ch.chunk(1)
    assert c1[0] == 7 and list(c1[1:]) == list(range(117, 132))
    assert list(ch.outputs()) == list(range(8, 15))
    assert list(ch.targets(1)) == list(range(125, 132))        # positions 8..14 predict 9..15
    assert toks[16] == 116                                      # the text itself is untouched
    no_bos = evaluate.chunking(toks, 16, 1, add_bos=False, bos=7)
    assert no_bos.n_chunks == 1 and no_bos.chunk(0)[0] == 100


def test_text_too_short_says_how_many_tokens_are_needed():
    with pytest.raises(InputError) as e:
        evaluate.chunking(np.arange(300), 512, 4, False, 0)
    assert "300 tokens" in e.value.message and "needs 512 tokens" in e.value.message
    assert "2048" in e.value.message and "--ctx" in e.value.hint


def test_statistics_follow_llama_perplexity():
    rng = np.random.default_rng(0)
    n = 1001
    nll, nllb = rng.gamma(2.0, 1.5, n), rng.gamma(2.0, 1.4, n)
    kld, dp = rng.gamma(0.5, 0.02, n), rng.normal(0, 0.05, n)
    same = rng.random(n) < 0.9
    s = KLDStats.from_values(nll, nllb, kld, same, dp)
    assert s.ppl == pytest.approx(math.exp(nll.mean()))
    assert s.ppl_err == pytest.approx(math.exp(nll.mean()) * nll.std() / math.sqrt(n - 1), rel=1e-9)
    assert s.kld_mean == pytest.approx(kld.mean())
    assert s.kld_err == pytest.approx(kld.std() / math.sqrt(n - 1), rel=1e-9)
    assert s.kld_median == pytest.approx(np.median(kld))
    for q, got in ((99, s.kld_p99), (99.9, s.kld_p999), (95, s.kld_p95), (90, s.kld_p90)):
        assert got == pytest.approx(np.percentile(kld, q))    # numpy's linear = llama.cpp's
    assert (s.kld_min, s.kld_max) == (kld.min(), kld.max())
    assert s.same_top_pct == pytest.approx(100 * same.mean())
    assert s.rms_dp_pct == pytest.approx(100 * math.sqrt((dp ** 2).mean()))
    assert s.ln_ppl_ratio == pytest.approx(nll.mean() - nllb.mean())
    p = PPLStats.from_nll(nll)
    assert (p.ppl, p.count) == (pytest.approx(s.ppl), n) and p.ppl_err == pytest.approx(s.ppl_err)


def test_base_cache_rows_keep_log_probs_to_a_quarter_millinat():
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((40, 3000)) * 4).astype(np.float32)
    logits[5] = 1.5                                   # a flat row
    logits[6, :] = -50.0
    logits[6, 7] = 10.0                               # one token far above all others
    targets = rng.integers(0, 3000, 40)
    rows = evaluate.encode_rows(logits, targets)
    exact = log_softmax(logits)
    got = evaluate.decode_rows(rows)
    kept = np.isfinite(got)
    assert kept[5].all() and kept[6].sum() == 1
    assert (exact[~kept] < exact.max(axis=1, keepdims=True).repeat(3000, 1)[~kept] - evaluate.LOGPROB_RANGE + 1e-6).all()
    err = np.abs(got[kept] - exact[kept])
    assert err.max() < 32 / 65534 + 1e-9             # half a step of rounding + half a step of renormalization
    assert np.array_equal(rows["top"], exact.argmax(axis=1))
    np.testing.assert_allclose(rows["nll"], -exact[np.arange(40), targets], rtol=0, atol=1e-12)
    # KLD of the stored base against its own float logits: ~0 (second order in the rounding)
    k = evaluate.kld_rows(rows, logits, targets)[2]
    assert np.abs(k).max() < 1e-6


# ---------------------------------------------------------------------------- tiny models in llama.cpp

@pytest.fixture(scope="module")
def tiny(tmp_path_factory, llama_cpp_ok):
    """A tiny llama with a SentencePiece tokenizer (adds BOS), as F32 and as Q4_0."""
    from ggtool.convert import convert

    d = tmp_path_factory.mktemp("tiny_eval")
    ck = tm.make_checkpoint(d / "ck", "llama", hidden=64, heads=4, kv_heads=2, tokenizer="spm")
    f32 = convert(ck, d / "m.F32.gguf", "F32", progress=False).path
    q4 = convert(ck, d / "m.Q4_0.gguf", "Q4_0", rules="llama.cpp", progress=False).path
    return {"dir": d, "ck": ck, "f32": f32, "q4": q4}


def test_kld_of_a_model_against_itself_is_zero(tiny, tmp_path):
    text = evaluate.default_text()
    base = evaluate.base_logprobs(tiny["f32"], text, ctx=64, chunks=3, cache_root=tmp_path, progress=False)
    s = evaluate.kld(base, tiny["f32"], progress=False)
    assert s.count == 3 * 31
    assert s.kld_mean < 1e-6 and s.kld_max < 1e-5
    assert s.same_top_pct == 100.0 and s.ppl == pytest.approx(s.ppl_base, rel=1e-6)


def test_kld_of_a_pair_equals_numpy_on_both_models_logits(tiny, tmp_path):
    """Same chunks through llama-cpp-python's high-level Llama (a different code path, flash
    attention off there, so off here too), numpy float64 log-softmax and KLD."""
    text = evaluate.default_text()
    base = evaluate.base_logprobs(tiny["f32"], text, ctx=64, chunks=3, cache_root=tmp_path, progress=False,
                                  flash_attn=False)
    s = evaluate.kld(base, tiny["q4"], progress=False, keep_values=True)
    ch = base.chunking()
    assert ch.add_bos and ch.chunk(0)[0] == ch.bos
    kld, nll, same = [], [], []
    for i in range(ch.n_chunks):
        ids = ch.chunk(i)
        la = log_softmax(oracle_logits(tiny["f32"], ids)[ch.first:ch.ctx - 1])
        lq = log_softmax(oracle_logits(tiny["q4"], ids)[ch.first:ch.ctx - 1])
        kld.append((np.exp(la) * (la - lq)).sum(axis=1))
        nll.append(-lq[np.arange(len(lq)), ids[ch.first + 1:]])
        same.append(la.argmax(axis=1) == lq.argmax(axis=1))
    kld, nll, same = map(np.concatenate, (kld, nll, same))
    assert s.kld_mean > 0.01                                   # a real difference to measure
    np.testing.assert_allclose(s.values["kld"], kld, rtol=1e-3, atol=1e-4)
    assert s.kld_mean == pytest.approx(kld.mean(), rel=1e-4)
    assert s.kld_median == pytest.approx(np.median(kld), rel=1e-3)
    assert s.kld_p99 == pytest.approx(np.percentile(kld, 99), rel=1e-3)
    assert s.ppl == pytest.approx(math.exp(nll.mean()), rel=1e-4)
    assert s.same_top_pct == pytest.approx(100 * same.mean(), abs=100 / len(same) + 1e-9)


def test_base_cache_resumes_and_extends(tiny, tmp_path):
    text = evaluate.default_text()
    b2 = evaluate.base_logprobs(tiny["f32"], text, ctx=64, chunks=2, cache_root=tmp_path, progress=False)
    files = sorted(b2.dir.glob("chunk_*.lp"))
    assert len(files) == 2
    mtime = files[0].stat().st_mtime_ns
    files[1].write_bytes(files[1].read_bytes()[:100])            # a damaged chunk is recomputed
    (b2.dir / "chunk_00002.lp.1234.incomplete").write_bytes(b"x")  # a killed write is ignored
    b4 = evaluate.base_logprobs(tiny["f32"], text, ctx=64, chunks=4, cache_root=tmp_path, progress=False)
    assert b4.dir == b2.dir and b4.n_chunks == 4
    assert files[0].stat().st_mtime_ns == mtime                 # untouched
    assert all(b4.has_chunk(i) for i in range(4))
    fresh = evaluate.base_logprobs(tiny["f32"], text, ctx=64, chunks=4, cache_root=tmp_path / "new",
                                   progress=False)
    for i in range(4):
        assert np.array_equal(np.asarray(b4.rows(i)), np.asarray(fresh.rows(i)))


def test_perplexity_without_a_base_matches_the_cached_base(tiny, tmp_path):
    text = evaluate.default_text()
    p = evaluate.perplexity(tiny["f32"], text, ctx=64, chunks=3, progress=False)
    base = evaluate.base_logprobs(tiny["f32"], text, ctx=64, chunks=3, cache_root=tmp_path, progress=False)
    assert p.count == base.tokens_scored == 93
    assert p.ppl == pytest.approx(base.base_stats().ppl, rel=1e-9)


def test_low_level_runner_logits_match_llama_cpp_python(tiny):
    """ggtool's runner (llama_batch, chosen outputs, several decode calls) gives the logits
    llama-cpp-python's Llama gives for the same positions."""
    from ggtool.llamacpp.context import LlamaModel

    with LlamaModel(tiny["f32"]) as m:
        ids = m.tokenize(evaluate.default_text()[:2000])[:100]
        with m.context(n_ctx=128, n_batch=32, flash_attn=False) as c:
            got = c.decode(ids, outputs=range(40, 99))
            c.clear()
            again = c.decode(ids, outputs=range(40, 99), pos0=0)
    want = oracle_logits(tiny["f32"], ids)[40:99]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * np.abs(want).max())
    assert np.array_equal(got, again)


def test_cb_eval_is_called(tiny):
    """The eval callback reaches llama.cpp (the imatrix collector hooks in here)."""
    from ggtool.llamacpp.context import LlamaModel

    seen = []

    def cb(tensor, ask, user_data):
        seen.append(bool(ask))
        return True

    with LlamaModel(tiny["f32"]) as m, m.context(n_ctx=32, cb_eval=cb) as c:
        c.decode(m.tokenize("Alice was beginning to get very tired"), outputs=[0])
    assert True in seen and False in seen


def test_perplexity_equals_a_numpy_forward_pass_of_the_checkpoint(tiny):
    """PPL by ggtool's evaluation of the F32 GGUF vs the float64 numpy forward pass of the HF
    checkpoint on the same chunks (BOS replacing each chunk's first token), scored the same way.
    The real SmolLM2 gets the same check through `ggtool bench` (tests/test_bench.py)."""
    from tests.reference_forward import ReferenceModel

    text = evaluate.default_text()
    ctx, chunks = 64, 3
    ours = evaluate.perplexity(tiny["f32"], text, ctx=ctx, chunks=chunks, progress=False)
    ref = ReferenceModel.from_dir(tiny["ck"])
    from ggtool.llamacpp.context import LlamaModel

    with LlamaModel(tiny["f32"]) as m:
        ch = evaluate.chunking(evaluate.tokenize(m, text), ctx, chunks, m.add_bos, m.bos)
    nll = []
    for i in range(chunks):
        c = ch.chunk(i)
        lp = log_softmax(ref.logits(c)[ctx // 2:ctx - 1])
        nll.append(-lp[np.arange(len(lp)), c[ctx // 2 + 1:]])
    nll = np.concatenate(nll)
    assert ours.count == nll.size == 93
    assert ours.ppl == pytest.approx(math.exp(nll.mean()), rel=2e-3)
