"""llama.cpp loads and runs a file of every quant type and every mix that ggtool writes,
and `--rules llama.cpp` picks the same type per tensor as llama_model_quantize itself."""

from __future__ import annotations

import numpy as np
import pytest
import gguf

from ggtool.convert import convert
from ggtool.mixes import MIXES
from tests.tinymodels import make_checkpoint

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]
# loose bound on max |logit error| / max |logit| per bits: the file must run, and run sensibly
BOUND = {"Q2_K": 0.6, "Q3_K": 0.4, "IQ4_XS": 0.3, "IQ4_NL": 0.3, "Q4_0": 0.3, "Q4_1": 0.3, "Q4_K": 0.3}


@pytest.fixture(scope="module")
def model256(tmp_path_factory):
    d = tmp_path_factory.mktemp("m256")
    ck = make_checkpoint(d / "ck", "llama", hidden=256, heads=4, kv_heads=1, intermediate=512, layers=2,
                         tokenizer="llama3", seed=11)
    f16 = convert(ck, d / "f16.gguf", "F16", progress=False).path
    return ck, f16


def _logits(path, ids):
    from ggtool.llamacpp import Model
    m = Model(path, n_ctx=64)
    try:
        return m.logits(ids)
    finally:
        m.close()


@pytest.mark.parametrize("qtype", TYPES)
def test_every_type_loads_and_runs(model256, qtype, tmp_path, llama_cpp_ok):
    from tests.reference_forward import reference_logits

    ck, _ = model256
    res = convert(ck, tmp_path / f"{qtype}.gguf", "Q8_0", rules="llama.cpp", progress=False,
                  overrides=[(r"\.weight$", qtype)])
    kinds = {t.tensor_type.name for t in gguf.GGUFReader(res.path).tensors}
    assert qtype in kinds
    ids = [5, 17, 99, 3, 250, 41, 7]
    got, ref = _logits(res.path, ids), reference_logits(ck, ids)
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert np.isfinite(got).all() and err < BOUND.get(qtype, 0.15), (qtype, err)


@pytest.mark.parametrize("mix", [m for m in MIXES if m not in ("F32",)])
def test_every_mix_runs_and_matches_llama_cpp_type_choice(model256, mix, tmp_path, llama_cpp_ok):
    from ggtool.llamacpp import llama_quantize_file

    _, f16 = model256
    ours = convert(f16, tmp_path / "ours.gguf", mix, rules="llama.cpp", progress=False).path
    theirs = tmp_path / "theirs.gguf"
    llama_quantize_file(f16, theirs, MIXES[mix].ftype, nthread=1)
    a = {t.name: t.tensor_type.name for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t.tensor_type.name for t in gguf.GGUFReader(theirs).tensors}
    assert a == b
    ra, rb = gguf.GGUFReader(ours).fields, gguf.GGUFReader(theirs).fields
    assert ra["general.file_type"].contents() == rb["general.file_type"].contents()
    assert np.isfinite(_logits(ours, [5, 17, 99, 3])).all()
