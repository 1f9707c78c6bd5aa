"""Fast GGUF header readers for the tests that use the real SmolLM2.

The HF checkpoint itself is unpacked from the GGUF by the library (ggtool.unpack.checkpoint_from_gguf,
the smollm2_checkpoint fixture in conftest.py). What is here is only what the tests need besides:
fast readers for a GGUF's header (gguf.GGUFReader builds a numpy view per array element, so it
takes seconds on a 49k-token vocabulary; test_tokenizer and test_mixes check these readers against
it).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}


def gguf_fields(reader) -> dict:
    """A gguf.GGUFReader's metadata as a dict (GGUF.* header pseudo-fields left out)."""
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def read_gguf_header(path: str | Path) -> tuple[dict, list[tuple[str, tuple[int, ...], int, int]]]:
    """(metadata, tensor infos) of a GGUF (v2/v3, little-endian). Tensor infos are
    (name, dims in GGUF order (ne0 first), ggml type number, data offset), in file order."""
    with open(path, "rb") as f:
        magic, version, n_tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{path}: not a GGUF v2+ file")

        def string():
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", errors="surrogateescape")

        def value(vtype):
            if vtype == 8:
                return string()
            if vtype == 9:
                etype, n = struct.unpack("<IQ", f.read(12))
                if etype in _SCALAR:
                    return np.frombuffer(f.read(n * struct.calcsize(_SCALAR[etype])), _SCALAR[etype]).tolist()
                return [value(etype) for _ in range(n)]
            fmt = _SCALAR[vtype]
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        kv = {}
        for _ in range(n_kv):
            key = string()
            (vtype,) = struct.unpack("<I", f.read(4))
            kv[key] = value(vtype)
        tensors = []
        for _ in range(n_tensors):
            name = string()
            (n_dims,) = struct.unpack("<I", f.read(4))
            dims = struct.unpack(f"<{n_dims}Q", f.read(8 * n_dims))
            ggml_type, offset = struct.unpack("<IQ", f.read(12))
            tensors.append((name, tuple(int(d) for d in dims), int(ggml_type), int(offset)))
    return kv, tensors


def read_gguf_kv(path: str | Path) -> dict:
    """The metadata of a GGUF as a dict; much faster than GGUFReader on big vocabularies."""
    return read_gguf_header(path)[0]
