"""Collect an importance matrix: run a GGUF with llama.cpp on calibration text and sum, for
every weight matrix, the squares of its input activations per input column (llama.cpp's
imatrix statistic, per expert for MoE tensors).

    im = collect("model.gguf", text=None, chunks=100, n_ctx=512)   # -> formats_imatrix.IMatrix

The activations come from llama.cpp's own graph through its eval callback (`cb_eval` in
llama_context_params), so every architecture llama.cpp runs works. As llama-imatrix does:
the text is tokenized once (with BOS when the model adds one), cut in chunks of n_ctx tokens,
the first token of each chunk replaced by BOS, every chunk decoded with all outputs on (so the
last layer's FFN and the output matmul see every token); MUL_MAT with fewer than 16 rows of
input is skipped, MUL_MAT_ID (experts) always counted, per routed expert.

llama-cpp-python has no binding for struct ggml_tensor: it is declared here with ctypes from
ggml.h (llama.cpp 0c1e570, vendored by llama-cpp-python 0.3.36).
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import DependencyError, InputError
from .formats.imatrix import Entry, IMatrix

GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_OP_PARAMS, GGML_MAX_NAME = 4, 10, 64, 64
MIN_ROWS = 16  # llama-imatrix ignores matmuls over fewer rows (single-token steps)


class GGMLTensor(ctypes.Structure):
    pass


GGMLTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
    ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GGMLTensor) * GGML_MAX_SRC),
    ("view_src", ctypes.POINTER(GGMLTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * GGML_MAX_NAME),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]


@lru_cache(maxsize=None)
def _ggml():
    """libggml-base (shipped inside llama-cpp-python) with the few functions the callback needs,
    and the op codes by name."""
    from .llamacpp import INSTALL_HINT, llama_cpp

    libdir = Path(llama_cpp().__file__).parent / "lib"
    cands = sorted(libdir.glob("libggml-base.*"))
    if not cands:
        raise DependencyError(f"libggml-base not found in {libdir}", hint=INSTALL_HINT)
    lib = ctypes.CDLL(str(cands[0]))
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
    lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.restype = None
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    lib.ggml_tensor_overhead.restype = ctypes.c_size_t
    # enum ggml_op of ggml.h: MUL_MAT = 29, MUL_MAT_ID = 30 in 0c1e570; look them up by name
    # among the first 64 ops (all well inside GGML_OP_COUNT, so ggml_op_name is safe there)
    ops = {lib.ggml_op_name(i).decode(): i for i in range(64)}
    if "MUL_MAT" not in ops or "MUL_MAT_ID" not in ops:
        raise DependencyError("this libggml has no MUL_MAT op among its first 64", hint=INSTALL_HINT)
    return lib, ops.get("MUL_MAT"), ops.get("MUL_MAT_ID")


def weight_name(raw: bytes) -> str:
    """'CUDA0#blk.0.attn_k.weight#0' -> 'blk.0.attn_k.weight' (filter_tensor_name)."""
    s = raw.decode("utf-8", errors="replace")
    if "#" in s:
        s = s.split("#", 2)[1]
    return s


def _view(t: GGMLTensor, lib) -> np.ndarray:
    """The float32 tensor t as a numpy array (ggml ne order reversed: (ne3, ne2, ne1, ne0)),
    copied out of device memory when it is not in host memory."""
    ne, nb = list(t.ne), list(t.nb)
    extent = 4 + sum((n - 1) * s for n, s in zip(ne, nb))
    if t.buffer and not lib.ggml_backend_buffer_is_host(t.buffer):
        buf = np.empty(extent, dtype=np.uint8)
        lib.ggml_backend_tensor_get(ctypes.addressof(t), buf.ctypes.data, 0, extent)
    else:
        buf = np.frombuffer((ctypes.c_char * extent).from_address(t.data), dtype=np.uint8)
    return np.ndarray(shape=tuple(reversed(ne)), dtype=np.float32, buffer=buf, strides=tuple(reversed(nb)))


class Collector:
    """The eval callback: accumulates sums of x^2 and row counts per weight matrix."""

    def __init__(self, include_output: bool = True):
        self.lib, self.op_mul_mat, self.op_mul_mat_id = _ggml()
        self.include_output = include_output
        self.sums: dict[str, np.ndarray] = {}     # (n_mat, n_cols) float64
        self.counts: dict[str, np.ndarray] = {}   # (n_mat,) int64
        self.error: BaseException | None = None

    def wanted(self, name: str) -> bool:
        return name.startswith("blk.") or (self.include_output and name in ("output.weight", "token_embd.weight"))

    def __call__(self, t_ptr, ask: bool, _user) -> bool:
        try:
            t = ctypes.cast(t_ptr, ctypes.POINTER(GGMLTensor)).contents
            if t.op not in (self.op_mul_mat, self.op_mul_mat_id):
                return False
            src0, src1 = t.src[0].contents, t.src[1].contents
            name = weight_name(src0.name)
            if not self.wanted(name):
                return False
            if t.op == self.op_mul_mat and (src1.ne[1] < MIN_ROWS or src1.type != 0):
                return False
            if ask:
                return True
            x = _view(src1, self.lib)  # (ne3, ne2, ne1, ne0)
            if t.op == self.op_mul_mat_id:
                self._add_experts(name, src0, src1, x, t.src[2].contents)
            else:
                self._add_dense(name, src0, x)
            return True
        except BaseException as e:  # an exception must not cross the C boundary
            self.error = self.error or e
            return False

    def _slot(self, name: str, n_mat: int, n_cols: int):
        if name not in self.sums:
            self.sums[name] = np.zeros((n_mat, n_cols), dtype=np.float64)
            self.counts[name] = np.zeros(n_mat, dtype=np.int64)
        s = self.sums[name]
        if s.shape != (n_mat, n_cols):
            raise RuntimeError(f"{name}: inconsistent activation width {s.shape} vs {(n_mat, n_cols)}")
        return s, self.counts[name]

    def _add_dense(self, name: str, src0: GGMLTensor, x: np.ndarray) -> None:
        n_mat = int(src0.ne[2] * src0.ne[3])
        s, c = self._slot(name, n_mat, x.shape[-1])
        x = x.astype(np.float64)
        if n_mat == 1:
            flat = x.reshape(-1, x.shape[-1])
            s[0] += np.einsum("ij,ij->j", flat, flat)
        else:  # 3-D+ weights: activation (i3, i2) goes to matrix (i3 % ne3) * ne2 + i2 % ne2
            ne2, ne3 = int(src0.ne[2]), int(src0.ne[3])
            for i3 in range(x.shape[0]):
                for i2 in range(x.shape[1]):
                    s[(i3 % ne3) * ne2 + i2 % ne2] += np.einsum("ij,ij->j", x[i3, i2], x[i3, i2])
        c += x.shape[0] * x.shape[1] * x.shape[2] // n_mat

    def _add_experts(self, name: str, src0: GGMLTensor, src1: GGMLTensor, x: np.ndarray,
                     ids_t: GGMLTensor) -> None:
        # ids: [n_ids, n_tokens] int32 (maybe strided); src1: [cols, ne11, n_tokens]
        n_as, n_ids, n_tok = int(src0.ne[2]), int(ids_t.ne[0]), int(ids_t.ne[1])
        extent = 4 + (n_ids - 1) * ids_t.nb[0] + (n_tok - 1) * ids_t.nb[1]
        raw = np.empty(extent, dtype=np.uint8)
        self.lib.ggml_backend_tensor_get(ctypes.addressof(ids_t), raw.ctypes.data, 0, extent)
        ids = np.ndarray((n_tok, n_ids), dtype=np.int32, buffer=raw, strides=(ids_t.nb[1], ids_t.nb[0]))
        s, c = self._slot(name, n_as, x.shape[-1])
        x = x[0].astype(np.float64)          # (n_tokens, ne11, cols)
        sq = x * x
        ne11 = x.shape[1]
        for idx in range(n_ids):
            ex = ids[:, idx]
            if ex.min() < 0 or ex.max() >= n_as:
                raise RuntimeError(f"{name}: expert id out of range")
            np.add.at(s, ex, sq[:, idx % ne11, :])
            np.add.at(c, ex, 1)

    def result(self, chunk_count: int, chunk_size: int, datasets: list[str]) -> IMatrix:
        im = IMatrix(datasets=datasets, chunk_count=chunk_count, chunk_size=chunk_size)
        for name in sorted(self.sums):
            im.entries[name] = Entry(self.sums[name].astype(np.float32), self.counts[name].astype(np.float64))
        return im


def default_text() -> str:
    return resources.files("ggtool").joinpath("data").joinpath("calibration.txt").read_text(encoding="utf-8")


def chunk_tokens(tokens: list[int], n_ctx: int, chunks: int | None, bos: int | None) -> list[list[int]]:
    """Chunks of n_ctx tokens, the first of each replaced by BOS when the model adds one."""
    n = len(tokens) // n_ctx
    if chunks is not None:
        n = min(n, chunks)
    out = []
    for i in range(n):
        c = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        if bos is not None:
            c[0] = bos
        out.append(c)
    return out


def collect(model_path, text: str | None = None, *, chunks: int | None = None, n_ctx: int = 512,
            threads: int | None = None, progress: bool = True, dataset: str = "calibration.txt",
            tokens: list[int] | None = None, include_output: bool = True) -> IMatrix:
    """The imatrix of the GGUF at model_path on `text` (default: the shipped calibration text)."""
    from .llamacpp.context import LlamaModel
    from .progress import bar

    if n_ctx < MIN_ROWS:
        raise InputError(f"--ctx {n_ctx} is too small", hint=f"use at least {MIN_ROWS} (llama.cpp skips smaller batches)")
    col = Collector(include_output=include_output)
    with LlamaModel(model_path) as model:
        if tokens is None:
            tokens = model.tokenize(text if text is not None else default_text()).tolist()
        pieces = chunk_tokens(tokens, n_ctx, chunks, model.bos if model.add_bos else None)
        if not pieces:
            raise InputError(f"the calibration text has {len(tokens)} tokens, fewer than one chunk of {n_ctx}",
                             hint=f"give a longer --text or a smaller --ctx (at most {len(tokens)})")
        # every position an output, so the last layer and the output matmul see every token
        with model.context(n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads, cb_eval=col) as ctx, \
                bar(len(pieces), "imatrix", progress, "chunk") as pb:
            for piece in pieces:
                ctx.clear()
                ctx.decode(piece, outputs=range(len(piece)), pos0=0, fetch=False)
                if col.error is not None:
                    raise col.error
                pb.update(1)
    if not col.sums:
        raise InputError(f"llama.cpp ran {model_path} but no weight matrix reached the callback",
                         hint="this model's graph has no MUL_MAT on named weights")
    return col.result(len(pieces), n_ctx, [dataset])
