import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

from ggtool import quants
from oracles.weights import edge_cases


@pytest.mark.parametrize("case", list(edge_cases()))
def test_q8_0_gguf_decodes_what_we_encode(backend, case):
    x = edge_cases()[case]
    q = quants.quantize(x, "Q8_0")
    ours = quants.dequantize(q, "Q8_0", x.shape)
    theirs = gguf_dequantize(q, T.Q8_0)
    np.testing.assert_array_equal(ours, theirs)


def test_q8_0_native_equals_numpy(monkeypatch):
    if "Q8_0" not in quants.NATIVE_KERNELS:
        pytest.skip("no native Q8_0")
    for case, x in edge_cases().items():
        monkeypatch.delenv("GGTOOL_FORCE_NUMPY", raising=False)
        a = quants.quantize(x, "Q8_0")
        monkeypatch.setenv("GGTOOL_FORCE_NUMPY", "1")
        b = quants.quantize(x, "Q8_0")
        assert a.tobytes() == b.tobytes(), case


def test_q8_0_error_is_within_half_step(backend, rng):
    x = rng.standard_normal((32, 512)).astype(np.float32)
    xh = quants.dequantize(quants.quantize(x, "Q8_0"), "Q8_0", x.shape)
    d = np.abs(x.reshape(-1, 32)).max(1, keepdims=True) / 127
    assert (np.abs(x.reshape(-1, 32) - xh.reshape(-1, 32)) <= d * 0.57 + 1e-7).all()  # half a step + fp16 rounding of d


def test_bad_row_length_and_nan():
    with pytest.raises(quants.QuantError, match="multiple of"):
        quants.quantize(np.zeros((2, 33), np.float32), "Q8_0")
    x = np.zeros((2, 64), np.float32)
    x[1, 7] = np.nan
    with pytest.raises(quants.QuantError, match="row 1, column 7"):
        quants.quantize(x, "Q8_0")
    with pytest.raises(quants.QuantError, match="unknown") as e:
        quants.quantize(x, "Q9_9")
    assert "Q4_K" in e.value.hint or "Q8_0" in e.value.hint


@pytest.mark.parametrize("qtype,value", [("F16", 7e4), ("Q8_0", 2e6), ("Q4_K", 5e6)])
def test_values_beyond_fp16_scales_are_refused(qtype, value):
    x = np.zeros((1, 256), np.float32)
    x[0, 3] = -value
    with pytest.raises(quants.QuantError, match="does not fit") as e:
        quants.check_range(x, qtype)
    assert "BF16" in e.value.hint
    quants.check_range(x, "BF16")  # BF16 and F32 take any finite value
    quants.check_range(x / value, qtype)
