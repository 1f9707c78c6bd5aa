"""GGUF header readers for the tests, over the library's fast reader (ggtool.formats.gguf_reader).

test_tokenizer and test_mixes check them against gguf-py's GGUFReader, which makes those tests
the oracle for ggtool.formats.gguf_reader too.
"""

from __future__ import annotations

from pathlib import Path

from ggtool.formats.gguf_reader import GGUFFile, PackedStrings


def gguf_fields(reader) -> dict:
    """A gguf.GGUFReader's metadata as a dict (GGUF.* header pseudo-fields left out)."""
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def read_gguf_header(path: str | Path) -> tuple[dict, list[tuple[str, tuple[int, ...], int, int]]]:
    """(metadata, tensor infos) of a GGUF. Tensor infos are (name, dims in GGUF order (ne0
    first), ggml type number, offset from the start of the data section), in file order."""
    f = GGUFFile(path)
    try:
        kv = {k: list(v.value) if isinstance(v.value, PackedStrings) else v.value for k, v in f.kv.items()}
        tensors = [(t.name, tuple(reversed(t.shape)), int(t.ggml_type), t.offset - f.data_start)
                   for t in f.tensors]
    finally:
        f.close()
    return kv, tensors


def read_gguf_kv(path: str | Path) -> dict:
    """The metadata of a GGUF as a dict; much faster than GGUFReader on big vocabularies."""
    return read_gguf_header(path)[0]
