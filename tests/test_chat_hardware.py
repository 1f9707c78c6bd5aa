"""Hardware detection and placement: the layer-fitting and context-capping arithmetic on made-up
machines (no GPU here), the model's shape read from a GGUF against llama.cpp's own numbers
(its KV cache size, its tensor bytes), and the probe of this machine."""

from __future__ import annotations

import re

import pytest

from ggtool.chat import hardware as hw

GiB = 1024 ** 3
MiB = 1024 ** 2


def shape(n_layer=32, layer=200 * MiB, output=250 * MiB, other=250 * MiB, ctx_train=8192, kv_heads=8, hd=128):
    return hw.ModelShape("llama", n_layer, ctx_train, [kv_heads] * n_layer, hd, hd, [layer] * n_layer, output, other)


def machine(*gpus, ram=64 * GiB, offload=True):
    devs = [hw.Device(f"CUDA{i}", "Fake GPU", "GPU", free, free + GiB) for i, free in enumerate(gpus)]
    return hw.Machine(["AVX2", "FMA"], 8, ram, offload, devs)


def test_kv_cache_arithmetic():
    s = shape()
    # 32 layers x 8 kv heads x (128 + 128) x 2 bytes = 128 KiB per token
    assert s.kv_bytes_per_token() == 32 * 8 * 256 * 2 == 128 * 1024
    assert s.kv_bytes(8192) == 1 * GiB
    assert s.kv_bytes(8192, layers=8) == GiB // 4


def test_all_layers_fit_on_a_big_gpu():
    p = hw.plan(shape(), machine(80 * GiB))
    assert p.n_ctx == 8192 and p.n_gpu_layers == 33 and not p.notes
    assert p.kv_gpu_bytes == p.kv_bytes == GiB


def test_partial_offload_counts_output_layer_first():
    s = shape()
    per_layer = 200 * MiB + s.kv_bytes(8192) // 32         # weights + this layer's KV (32 MiB)
    free = 4 * GiB
    budget = free - hw.GPU_RESERVE - int(free * hw.GPU_RESERVE_FRACTION)
    want = 1 + (budget - 250 * MiB) // per_layer               # output layer, then whole layers
    p = hw.plan(s, machine(free))
    assert p.n_gpu_layers == want == 14
    assert any("14 of 33 layers fit" in n for n in p.notes)
    assert p.kv_gpu_bytes == s.kv_bytes(8192, layers=13)


def test_two_gpus_pool_their_memory():
    one = hw.plan(shape(), machine(4 * GiB)).n_gpu_layers
    two = hw.plan(shape(), machine(4 * GiB, 4 * GiB)).n_gpu_layers
    assert two > 2 * one - 2


def test_nothing_fits_and_no_gpu():
    assert hw.plan(shape(), machine(256 * MiB)).n_gpu_layers == 0
    p = hw.plan(shape(), machine())
    assert p.n_gpu_layers == 0 and not p.notes


def test_gpu_layers_override():
    assert hw.plan(shape(), machine(256 * MiB), gpu_layers=5).n_gpu_layers == 5
    assert hw.plan(shape(), machine(80 * GiB), gpu_layers=-1).n_gpu_layers == 33
    assert hw.plan(shape(), machine(80 * GiB), gpu_layers=0).n_gpu_layers == 0
    p = hw.plan(shape(), machine(offload=False), gpu_layers=10)
    assert p.n_gpu_layers == 0 and "built without a GPU backend" in p.notes[0]


def test_context_capped_to_memory_and_says_so():
    s = shape(ctx_train=131072)      # a full cache would be 16 GiB
    p = hw.plan(s, machine(ram=8 * GiB))
    budget = 8 * GiB - hw.RAM_RESERVE - s.weight_bytes
    assert p.n_ctx == budget // s.kv_bytes_per_token() // 256 * 256
    assert p.n_ctx < 131072 and p.n_ctx % 256 == 0
    assert any(f"context capped to {p.n_ctx} of the 131072" in n for n in p.notes)
    # a GPU's memory counts too
    assert hw.plan(s, machine(80 * GiB, ram=8 * GiB)).n_ctx == 131072
    # asked for explicitly: as asked, with a note past the trained length
    p = hw.plan(s, machine(ram=8 * GiB), ctx=200000)
    assert p.n_ctx == 200000 and "beyond the 131072" in p.notes[0]
    assert hw.plan(s, machine(ram=1 * GiB)).n_ctx == hw.MIN_CTX


def test_describe_says_what_runs_where():
    s = shape()
    lines = hw.plan(s, machine(4 * GiB)).describe(s, machine(4 * GiB))
    text = "\n".join(lines)
    assert "CPU: 8 threads (AVX2, FMA)" in text
    assert "layers on GPU: 14/33 (the other 19 on the CPU)" in text
    assert "KV cache 1.0 GiB (f16, 416.0 MiB of it on GPU)" in text
    cpu = hw.Machine(["AVX2"], 2, 8 * GiB, False, [], "an NVIDIA GPU is here but ... cuda make install")
    text = "\n".join(hw.plan(s, cpu).describe(s, cpu))
    assert "GPU: none (CPU-only llama.cpp build)" in text and "cuda make install" in text


def test_cpu_features_parse():
    info = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | AVX512 = 0 | "
            "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
    assert hw.cpu_features(info) == ["SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "LLAMAFILE", "OPENMP", "REPACK"]


def test_offloaded_from_log():
    assert hw.offloaded_from_log(["x\n", "load_tensors: offloaded 12/33 layers to GPU\n"]) == (12, 33)
    assert hw.offloaded_from_log(["nothing"]) is None


# ------------------------------------------------------------------ against llama.cpp itself

@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    from ggtool.convert import convert
    from tests.tinymodels import make_checkpoint

    root = tmp_path_factory.mktemp("hw")
    ck = make_checkpoint(root / "ck", "llama", hidden=128, layers=3, heads=4, kv_heads=2, max_pos=4096)
    out = root / "tiny.gguf"
    convert(ck, out, "Q8_0", progress=False)
    return out


def test_shape_matches_the_file_and_llama_cpp_kv_size(tiny_gguf, llama_cpp_ok):
    import gguf

    from ggtool.chat.engine import Engine
    from ggtool.llamacpp import log_tail

    s = hw.ModelShape.from_gguf(tiny_gguf)
    r = gguf.GGUFReader(str(tiny_gguf))
    assert s.n_layer == 3 and s.n_ctx_train == 4096 and s.kv_heads == [2, 2, 2] and s.head_dim_k == 32
    assert sum(s.layer_bytes) + s.output_bytes + s.other_bytes == sum(int(t.n_bytes) for t in r.tensors)
    assert s.layer_bytes[0] == sum(int(t.n_bytes) for t in r.tensors if t.name.startswith("blk.0."))

    eng = Engine.load(tiny_gguf, ctx=1024)
    try:
        kv = [line for line in log_tail() if "llama_kv_cache: size =" in line]
        if not kv:
            pytest.skip("llama.cpp's log is not captured (GGTOOL_DEBUG set?)")
        mib = float(re.search(r"size =\s*([\d.]+) MiB", kv[-1]).group(1))
        assert abs(mib * MiB - eng.plan.kv_bytes) < 0.01 * MiB       # llama.cpp prints 2 decimals
        assert eng.plan.n_gpu_layers == 0 and eng.n_ctx == 1024
        assert any(line.startswith("context: 1024 tokens (trained: 4096)") for line in eng.describe())
    finally:
        eng.close()


def test_probe_this_machine(llama_cpp_ok):
    m = hw.probe()
    assert m.threads >= 1
    assert m.ram_available is None or m.ram_available > 0
    assert "AVX2" in m.cpu_features or "NEON" in m.cpu_features or m.cpu_features is not None
    if not m.gpu_offload:
        assert m.devices == []
