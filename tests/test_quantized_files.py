"""llama.cpp loads and runs a file of every quant type and every mix that ggtool writes,
and `--rules llama.cpp` picks the same type per tensor as llama_model_quantize itself."""

from __future__ import annotations

import numpy as np
import pytest
import gguf

from ggtool.convert import convert
from oracles.llamacpp import logits as _logits  # llama.cpp's logits of a GGUF
from ggtool.plan.llamacpp import MIXES
from tests.tinymodels import make_checkpoint

# type -> the llama_ftype whose default it is (for llama.cpp's own --pure file of that type)
TYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7, "Q2_K": 10, "Q3_K": 11, "Q4_K": 14,
         "Q5_K": 16, "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30}


@pytest.fixture(scope="module")
def model256(tmp_path_factory):
    d = tmp_path_factory.mktemp("m256")
    ck = make_checkpoint(d / "ck", "llama", hidden=256, heads=4, kv_heads=1, intermediate=512, layers=2,
                         tokenizer="llama3", seed=11)
    f16 = convert(ck, d / "f16.gguf", "F16", progress=False).path
    return ck, f16


@pytest.mark.parametrize("qtype", list(TYPES))
def test_every_type_loads_and_runs(model256, qtype, tmp_path, llama_cpp_ok):
    """Every matrix in `qtype`: llama.cpp runs it, and its logits are about as close to the
    reference forward pass as those of llama.cpp's own --pure file of that type."""
    from ggtool.llamacpp.quantize import llama_quantize_file
    from tests.reference_forward import reference_logits

    ck, f16 = model256
    res = convert(f16, tmp_path / f"{qtype}.gguf", "Q8_0", rules="llama.cpp", progress=False,
                  overrides=[(r"\.weight$", qtype)])
    theirs = tmp_path / f"{qtype}.llama.gguf"
    llama_quantize_file(f16, theirs, TYPES[qtype], nthread=1, extra={"pure": True})
    kinds = {t.name: t.tensor_type.name for t in gguf.GGUFReader(res.path).tensors}
    assert kinds == {t.name: t.tensor_type.name for t in gguf.GGUFReader(theirs).tensors}
    assert qtype in kinds.values()
    ids = [int(i) for i in np.random.default_rng(0).integers(3, 1000, 48)]
    ref = reference_logits(ck, ids)
    ours, base = _logits(res.path, ids), _logits(theirs, ids)
    assert np.isfinite(ours).all()
    rms = float(np.sqrt(((ours - ref) ** 2).mean()))
    rms_llama = float(np.sqrt(((base - ref) ** 2).mean()))
    assert rms <= 1.05 * rms_llama, (qtype, rms, rms_llama)


@pytest.mark.parametrize("mix", [m for m in MIXES if m not in ("F32",)])
def test_every_mix_runs_and_matches_llama_cpp_type_choice(model256, mix, tmp_path, llama_cpp_ok):
    from ggtool.llamacpp.quantize import llama_quantize_file

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
