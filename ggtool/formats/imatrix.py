"""Importance-matrix files: llama.cpp's GGUF imatrix format and its legacy `.dat` format.

An imatrix holds, for every weight matrix, the per-input-column sum of squared activations
seen on calibration text (`sums`, shape (n_mat, n_cols): one row per expert for MoE tensors,
else one) and how many activation rows went into each sum (`counts`, (n_mat,)).

GGUF layout (llama.cpp tools/imatrix/imatrix.cpp, save_imatrix): no general.architecture;
KVs general.type = "imatrix", imatrix.datasets ([str]), imatrix.chunk_count (u32),
imatrix.chunk_size (u32); per matrix `<name>.in_sum2` F32 ne=[n_cols, n_mat] and
`<name>.counts` F32 ne=[1, n_mat]; tensors sorted by name.

Legacy `.dat` (save_imatrix_legacy), all little-endian:
    i32 n_entries
    n_entries x { i32 len; char name[len]; i32 ncall; i32 nval; f32 values[nval] }
    optional: i32 chunk_count; i32 len; char dataset[len]
where values = sums / count * ncall (a 0 count stores 1.0).

The weights llama-quantize hands to the quantizer (tools/quantize/quantize.cpp, load_imatrix):
GGUF: sums / count per expert (a 0 count gives 1.0); legacy: values / ncall.
"""

from __future__ import annotations

import os
import re
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CorruptFile, InputError, OutputError

KV_DATASETS = "imatrix.datasets"
KV_CHUNK_COUNT = "imatrix.chunk_count"
KV_CHUNK_SIZE = "imatrix.chunk_size"
SUM_SUFFIX, COUNT_SUFFIX = ".in_sum2", ".counts"
ALIGN = 32


class IMatrixError(InputError):
    hint = "make the imatrix for this very model: ggtool imatrix MODEL -o FILE"


@dataclass
class Entry:
    sums: np.ndarray     # (n_mat, n_cols) float32: sum of x^2 per input column
    counts: np.ndarray   # (n_mat,) float64: activation rows summed

    def weights(self) -> np.ndarray:
        """(n_mat * n_cols,) float32: the importance weights llama-quantize uses."""
        c = self.counts.astype(np.float64)[:, None]
        w = np.where(c > 0, self.sums / np.where(c > 0, c, 1.0), 1.0)
        return w.astype(np.float32).reshape(-1)


@dataclass
class IMatrix:
    entries: dict[str, Entry] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False

    def weights(self, name: str) -> np.ndarray | None:
        e = self.entries.get(name)
        return None if e is None else e.weights()

    def digest(self) -> str:
        """Content hash (what the sensitivity cache is keyed by)."""
        import hashlib

        h = hashlib.sha256()
        for name in sorted(self.entries):
            e = self.entries[name]
            h.update(name.encode() + b"\0")
            h.update(np.ascontiguousarray(e.weights()).tobytes())
        return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------ write

def _gguf_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def write_gguf(im: IMatrix, path: str | os.PathLike) -> Path:
    """Write llama.cpp's GGUF imatrix format, atomically (.incomplete + rename)."""
    path = Path(path)
    names = sorted(im.entries)
    kv = [
        _gguf_str("general.type") + struct.pack("<I", 8) + _gguf_str("imatrix"),
        _gguf_str(KV_DATASETS) + struct.pack("<IIQ", 9, 8, len(im.datasets))
        + b"".join(_gguf_str(d) for d in im.datasets),
        _gguf_str(KV_CHUNK_COUNT) + struct.pack("<II", 4, int(im.chunk_count)),
        _gguf_str(KV_CHUNK_SIZE) + struct.pack("<II", 4, int(im.chunk_size)),
    ]
    infos, blobs, off = [], [], 0
    for name in names:
        e = im.entries[name]
        sums = np.ascontiguousarray(e.sums, dtype="<f4")
        counts = np.ascontiguousarray(np.asarray(e.counts, dtype="<f4").reshape(-1, 1))
        n_mat, n_cols = sums.shape
        for tname, arr, ne in ((name + SUM_SUFFIX, sums, (n_cols, n_mat)),
                               (name + COUNT_SUFFIX, counts, (1, n_mat))):
            infos.append(_gguf_str(tname) + struct.pack("<I", 2) + struct.pack("<QQ", *ne)
                         + struct.pack("<IQ", 0, off))  # type 0 = F32
            data = arr.tobytes()
            pad = -len(data) % ALIGN
            blobs.append(data + b"\0" * pad)
            off += len(data) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(kv)) + b"".join(kv) + b"".join(infos)
    head += b"\0" * (-len(head) % ALIGN)
    tmp = path.parent / f"{path.name}.{secrets.token_hex(4)}.incomplete"
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            for b in blobs:
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        from .gguf_writer import _os_error  # full disk, read-only, permissions: one wording

        tmp.unlink(missing_ok=True)
        raise _os_error(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------------ read

def read(path: str | os.PathLike) -> IMatrix:
    """Read a GGUF imatrix or a legacy .dat one (told apart by the GGUF magic)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise InputError(f"cannot read imatrix {p}: {e.strerror or e}") from None
    return _read_gguf(p) if magic == b"GGUF" else _read_dat(p)


def _read_gguf(p: Path) -> IMatrix:
    from gguf import GGMLQuantizationType as T

    from .gguf_reader import GGUFFile

    f = GGUFFile(p)  # strict: a truncated file is a CorruptFile
    try:
        pairs: dict[str, dict] = {}
        for t in f.tensors:
            for suffix, key in ((SUM_SUFFIX, "sums"), (COUNT_SUFFIX, "counts")):
                if t.name.endswith(suffix):
                    if t.ggml_type != T.F32:
                        raise CorruptFile(f"{p.name}: imatrix tensor {t.name} is {t.ggml_type.name}, not F32")
                    pairs.setdefault(t.name[: -len(suffix)], {})[key] = t
        if not pairs:
            if f.get("general.architecture"):
                raise IMatrixError(f"{p.name} is a model GGUF, not an imatrix",
                                   hint="give the imatrix file (ggtool imatrix MODEL -o FILE makes one)")
            raise CorruptFile(f"{p.name}: no imatrix data (.in_sum2/.counts tensors) in the file")
        im = IMatrix(datasets=[str(d) for d in (f.get(KV_DATASETS) or [])],
                     chunk_count=int(f.get(KV_CHUNK_COUNT, 0)), chunk_size=int(f.get(KV_CHUNK_SIZE, 0)))
        for name, d in sorted(pairs.items()):
            if "sums" not in d or "counts" not in d:
                raise CorruptFile(f"{p.name}: {name} has {'sums' if 'sums' in d else 'counts'} but not "
                                  f"{'counts' if 'sums' in d else 'sums'}")
            s, c = d["sums"], d["counts"]
            n_mat = int(np.prod(c.shape))
            sums = np.frombuffer(f.raw(s), "<f4").astype(np.float32)
            if n_mat < 1 or sums.size % n_mat:
                raise CorruptFile(f"{p.name}: {name}: {sums.size} sums do not split into {n_mat} matrices")
            counts = np.frombuffer(f.raw(c), "<f4").astype(np.float64)
            im.entries[name] = Entry(sums.reshape(n_mat, -1), np.rint(counts))
        _check_finite(im, p)
        return im
    finally:
        f.close()


def _read_dat(p: Path) -> IMatrix:
    blob = p.read_bytes()
    pos = 0

    def take(fmt: str, what: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(blob):
            raise CorruptFile(f"{p.name}: truncated imatrix ({what} at byte {pos} runs past the end, "
                              f"file has {len(blob)} bytes)")
        vals = struct.unpack_from(fmt, blob, pos)
        pos += size
        return vals

    (n,) = take("<i", "entry count")
    if n < 1 or n > 1_000_000:
        raise CorruptFile(f"{p.name} is neither a GGUF imatrix nor a legacy .dat imatrix "
                          f"(first word {n} is no entry count)")
    im = IMatrix(legacy=True)
    for i in range(n):
        (ln,) = take("<i", f"name length of entry {i + 1}")
        if not 0 < ln < 4096:
            raise CorruptFile(f"{p.name}: entry {i + 1} has a name length of {ln}")
        (raw,) = take(f"<{ln}s", f"name of entry {i + 1}")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptFile(f"{p.name}: entry {i + 1} has a name that is not UTF-8") from None
        ncall, nval = take("<ii", f"sizes of {name}")
        if nval < 1:
            raise CorruptFile(f"{p.name}: {name} has {nval} values")
        if pos + 4 * nval > len(blob):
            raise CorruptFile(f"{p.name}: truncated imatrix ({name} needs {4 * nval} bytes of values, "
                              f"{len(blob) - pos} left)")
        vals = np.frombuffer(blob, "<f4", nval, pos).astype(np.float32)
        pos += 4 * nval
        # stored values are mean * ncall: keep them as "sums" with count = ncall, so that
        # weights() = values / ncall exactly as llama-quantize divides them
        im.entries[name] = Entry(vals.reshape(1, -1), np.array([float(ncall)]))
    if pos + 4 <= len(blob):  # optional trailer: chunk count, dataset name
        (im.chunk_count,) = take("<i", "chunk count")
        if pos + 4 <= len(blob):
            (ln,) = take("<i", "dataset name length")
            if ln > 0:
                (raw,) = take(f"<{ln}s", "dataset name")
                im.datasets.append(raw.decode("utf-8", errors="replace"))
    # legacy ncall 0: llama-quantize takes the values as they are (count 1 does that)
    for e in im.entries.values():
        e.counts[e.counts <= 0] = 1.0
    _check_finite(im, p)
    return im


def _check_finite(im: IMatrix, p: Path) -> None:
    for name, e in im.entries.items():
        if not np.isfinite(e.sums).all() or (e.sums < 0).any():
            raise CorruptFile(f"{p.name}: {name} holds negative or non-finite values")


# ------------------------------------------------------------------------------------ match

def _layer_name(name: str) -> bool:
    return re.match(r"blk\.\d+\.", name) is not None


def check_for_model(im: IMatrix, tensors, quantized: set[str] | None = None,
                    source: str = "the imatrix") -> None:
    """Refuse an imatrix that does not belong to a model with `tensors` ((name, numpy shape)).

    Every quantized matrix inside a layer (blk.N.*) must have an entry whose width is the
    row length (times the expert count for 3-D expert tensors), as llama-quantize checks;
    token_embd is never a matmul and output.weight only optionally has one."""
    shapes = {n: tuple(s) for n, s in tensors}
    wrong, missing = [], []
    for name, shape in shapes.items():
        if quantized is not None and name not in quantized:
            continue
        e = im.entries.get(name)
        want = shape[-1] * (shape[0] if len(shape) == 3 else 1)
        if e is None:
            if _layer_name(name) and len(shape) >= 2:
                missing.append(name)
            continue
        if e.sums.size != want and "token_embd" not in name:
            wrong.append(f"{name} ({e.sums.size} values, the tensor needs {want})")
    unknown = [n for n in im.entries if n not in shapes]
    if wrong:
        raise IMatrixError(f"{source} does not fit this model: {len(wrong)} tensor(s) of the wrong "
                           f"width, e.g. {wrong[0]}")
    if missing:
        extra = f"; it has {len(unknown)} entries this model lacks, e.g. {unknown[0]}" if unknown else ""
        raise IMatrixError(f"{source} has no data for {len(missing)} of this model's tensors, "
                           f"e.g. {missing[0]}{extra}")
