"""F32/F16/BF16 through the registry: exact, and the native fp16 path equals numpy's cast."""

import numpy as np

from ggtool import quants


def test_f16_decode_every_bit_pattern(backend):
    bits = np.arange(65536, dtype=np.uint16)
    got = quants.dequantize(bits.view(np.uint8), "F16", (65536,))
    want = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # -0.0 too


def test_f16_round_trip_and_bf16(backend, rng):
    x = rng.standard_normal((7, 40)).astype(np.float32)
    h = quants.dequantize(quants.quantize(x, "F16"), "F16", x.shape)
    np.testing.assert_array_equal(h, x.astype(np.float16).astype(np.float32))
    b = quants.dequantize(quants.quantize(x, "BF16"), "BF16", x.shape)
    assert np.abs(b - x).max() <= np.abs(x).max() * 2 ** -8
    np.testing.assert_array_equal(quants.dequantize(quants.quantize(x, "F32"), "F32", x.shape), x)
