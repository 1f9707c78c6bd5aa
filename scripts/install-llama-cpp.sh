#!/usr/bin/env bash
# Build and install llama-cpp-python into the active Python so that it runs on this CPU.
#
# Why a script: a native (-march=native) build enables AMX on Sapphire Rapids-class CPUs and
# segfaults in ggml_backend_amx_mul_mat on every quantized model. We build with GGML_NATIVE=OFF
# and an explicit AVX2/FMA/F16C baseline. pip caches the wheel it built and reuses it whatever
# CMAKE_ARGS say, so we never use pip's cache: we keep our own wheel cache keyed by the version
# AND the CMake arguments, so a rebuild with other flags never picks up a stale wheel.
#
# Other backends (set GGTOOL_LLAMA_BACKEND before `make install`):
#   cpu   (default)  -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
#   cuda             -DGGML_CUDA=on            (needs nvcc on PATH)
#   metal            -DGGML_METAL=on           (macOS; Metal is also llama.cpp's default there)
# or pass your own flags verbatim in CMAKE_ARGS.
set -euo pipefail

PY=${PYTHON:-python}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute: PATH use below
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
BACKEND=${GGTOOL_LLAMA_BACKEND:-cpu}

if [ -z "${CMAKE_ARGS:-}" ]; then
  case "$BACKEND" in
    cpu)   CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" ;;
    cuda)  CMAKE_ARGS="-DGGML_CUDA=on" ;;
    metal) CMAKE_ARGS="-DGGML_METAL=on" ;;
    *) echo "Error: unknown GGTOOL_LLAMA_BACKEND=$BACKEND (cpu, cuda, metal)" >&2; exit 1 ;;
  esac
fi
export CMAKE_ARGS

# Already installed with these exact flags? Nothing to do.
if $PY - "$VERSION" "$CMAKE_ARGS" <<'PYEOF' 2>/dev/null
import sys, importlib.metadata as md, pathlib
v, args = sys.argv[1], sys.argv[2]
assert md.version("llama_cpp_python") == v
import llama_cpp
stamp = pathlib.Path(llama_cpp.__file__).with_name("GGTOOL_CMAKE_ARGS")
assert stamp.read_text() == args
PYEOF
then
  echo "llama-cpp-python $VERSION already built with: $CMAKE_ARGS" >&2
else
  key=$(printf '%s|%s|%s' "$VERSION" "$CMAKE_ARGS" "$($PY -c 'import sys;print(sys.version_info[:2])')" | sha256sum | cut -c1-16)
  cache=${GGTOOL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ggtool/wheels}/$key
  whl=$(ls "$cache"/llama_cpp_python-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    echo "Building llama-cpp-python $VERSION from source (10-17 minutes on 2 cores) with: $CMAKE_ARGS" >&2
    # Build without pip's isolated build env: there the machine's `cmake` (a Python wrapper
    # script) runs under pip's isolation sitecustomize and fails at install time. The build
    # tools go into our own environment instead, and its bin/ comes first on PATH.
    $PY -m pip install -q --no-cache-dir "scikit-build-core>=0.9.2" "cmake>=3.21" ninja >&2
    export PATH="$(dirname "$PY"):$PATH"
    tmp=$(mktemp -d)
    $PY -m pip wheel --no-build-isolation --no-cache-dir --no-deps -w "$tmp" "llama-cpp-python==$VERSION" >&2
    mkdir -p "$cache"
    mv "$tmp"/llama_cpp_python-*.whl "$cache"/
    rm -rf "$tmp"
    whl=$(ls "$cache"/llama_cpp_python-*.whl | head -n1)
  else
    echo "Using cached llama-cpp-python wheel $whl (built with: $CMAKE_ARGS)" >&2
  fi
  $PY -m pip install --no-cache-dir --force-reinstall --no-deps "$whl" >&2
  $PY -m pip install --no-cache-dir "llama-cpp-python==$VERSION" >&2   # its pure-python deps
  $PY - "$CMAKE_ARGS" <<'PYEOF'
import sys, pathlib, llama_cpp
pathlib.Path(llama_cpp.__file__).with_name("GGTOOL_CMAKE_ARGS").write_text(sys.argv[1])
PYEOF
fi

# Verify: an AMX build crashes on quantized models on these CPUs.
if [ "$BACKEND" = cpu ]; then
  $PY - <<'PYEOF'
import llama_cpp, sys
info = llama_cpp.llama_print_system_info().decode()
if "AMX_INT8 = 1" in info:
    sys.exit("Error: llama-cpp-python was built with AMX (crashes on quantized models).\n"
             "Hint: rm -rf ~/.cache/ggtool/wheels && make install")
print("llama.cpp system info:", info.strip(), file=sys.stderr)
PYEOF
fi
