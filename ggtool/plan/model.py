"""What the type-choice rules need to know about a model, read from a GGUF in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Architectures whose loader calls an 80-layer model "70B" (attn_v gets a bump there), and
# whether that also needs grouped-query attention (llama: 80 layers without GQA is "65B").
SEVENTY_B = {"llama": (80, True), "qwen2": (80, False), "deci": (80, False),
             "olmo": (80, False), "jais2": (68, False)}


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int = 0

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        n, needs_gqa = SEVENTY_B.get(self.arch, (0, False))
        if self.arch == "llama" and self.n_expert == 8:
            return False
        return self.n_layer == n and (not needs_gqa or self.n_head != self.n_head_kv)

    @classmethod
    def from_kv(cls, get: Callable[[str, object], object], where: str = "GGUF") -> "ModelInfo":
        """From GGUF metadata: `get(key, default)`. Per-layer head counts (lists): layer 0, as
        llama.cpp's quantizer reads them. A count that is not a non-negative integer below 2^32
        (as llama.cpp reads them) is a CorruptFile naming `where` and the key."""
        from ..errors import CorruptFile

        arch = get("general.architecture", "")
        arch = arch if isinstance(arch, str) else ""

        def count(key: str, default: int) -> int:
            v = get(key, default)
            v = v[0] if isinstance(v, (list, tuple)) and v else v
            if v is None or v == []:
                return default
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**32:
                raise CorruptFile(f"{where}: {key} is {str(v)[:40]!r}; expected a count",
                                  hint="the file's metadata is damaged: download it again")
            return v

        n_head = count(f"{arch}.attention.head_count", 0)
        return cls(arch=arch, n_layer=count(f"{arch}.block_count", 0), n_head=n_head,
                   n_head_kv=count(f"{arch}.attention.head_count_kv", n_head),
                   n_expert=count(f"{arch}.expert_count", 0))

    @classmethod
    def from_gguf(cls, path) -> "ModelInfo":
        from ..formats.gguf_reader import GGUFFile

        f = GGUFFile(path)
        try:
            return cls.from_kv(f.get, where=f.path.name)
        finally:
            f.close()
