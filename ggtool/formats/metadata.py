"""GGUF key-values as data.

A source says what it knows about its model as a `Metadata` value (ollama's converters return
`KV()` the same way); one place, `formats.gguf_writer.GGUFOutput`, writes it. `Metadata` has
gguf-py's typed `add_*` API (add_context_length, add_token_list, ...) so that every key is
spelled and typed as llama.cpp reads it, but it only collects: it never opens a file.
"""

from __future__ import annotations

import gguf


class Metadata(gguf.GGUFWriter):
    def __init__(self, arch: str):
        super().__init__(None, arch)

    @property
    def items(self) -> dict[str, gguf.GGUFValue]:
        """key -> GGUFValue(value, type, sub_type), in the order they were added
        (general.architecture first)."""
        return self.kv_data[0]

    def get(self, key: str, default=None):
        v = self.items.get(key)
        return default if v is None else v.value

    def update(self, other: "Metadata") -> None:
        for key, v in other.items.items():
            if key != gguf.Keys.General.ARCHITECTURE:
                self.add_key_value(key, v.value, v.type, sub_type=v.sub_type)

    def _never(self, *a, **k):
        raise TypeError("Metadata only collects key-values; GGUFOutput writes files")

    write_header_to_file = write_kv_data_to_file = write_ti_data_to_file = _never
    write_tensors_to_file = write_tensor_data = _never
