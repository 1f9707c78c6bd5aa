"""File formats, bytes only: what is on disk and how to read or write it, nothing about models.

    safetensors.py   strict mmap reader of Hugging Face weights (never a pickle)
    gguf_reader.py   fast strict GGUF reader (metadata as values, tensors as mmap views)
    gguf_writer.py   plan-then-stream GGUF writer, atomic (.incomplete + rename)
    metadata.py      GGUF key-values as data (what a source says; the writer writes it)
    hf_writer.py     a Hugging Face checkpoint folder (safetensors + JSON), atomic
    dtypes.py        the one table of GGUF value types <-> struct/numpy formats
    mmap_hints.py    page hints for streaming tensors out of a read-only map
    imatrix.py       importance matrices: llama.cpp's GGUF imatrix format and legacy .dat
"""
