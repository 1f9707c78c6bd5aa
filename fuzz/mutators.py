"""Seeded, structure-aware mutators. Each takes a `random.Random` and valid bytes and returns
damaged bytes: one field changed where it can (a length, a count, a type, an offset, a JSON
value of the wrong type or an absurd size), raw damage (bit flips, truncation) otherwise.

Given the same Random state a mutator gives the same bytes, so a mutant is named by
(target, seed, number) and hypothesis can shrink the choices that made it.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

# --------------------------------------------------------------------------- numbers

INTERESTING = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 33, 63, 64, 100, 127, 128, 255, 256, 1000,
               1023, 1024, 4095, 4096, 32767, 32768, 65535, 65536, 2**24, 2**31 - 1, 2**31,
               2**32 - 1, 2**32, 2**40, 2**53, 2**60, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


def interesting_int(rng, bits: int = 64, current: int | None = None, size: int | None = None) -> int:
    """An unsigned value of `bits` bits that tends to break a parser: 0, 1, powers of two and
    their neighbours, all ones, the file size and around it, the current value +-1 or doubled."""
    mask = (1 << bits) - 1
    pick = rng.random()
    if current is not None and pick < 0.25:
        v = rng.choice([current + 1, current - 1, current * 2, current + 8, current // 2, current ^ (1 << rng.randrange(bits))])
    elif size is not None and pick < 0.4:
        v = size + rng.randrange(-16, 17)
    elif pick < 0.9:
        v = rng.choice(INTERESTING)
        v = rng.choice([v, v - 1, -v]) if rng.random() < 0.3 else v
    else:
        v = rng.getrandbits(bits)
    return v & mask


# --------------------------------------------------------------------------- bytes

def mutate_bytes(rng, data: bytes, lo: int = 0, hi: int | None = None) -> bytes:
    """Raw damage within data[lo:hi]: bit flips, bytes set to 00/ff/7f/80, a range deleted,
    duplicated or filled with noise, a truncation, garbage appended."""
    b = bytearray(data)
    hi = len(b) if hi is None else min(hi, len(b))
    if hi <= lo:
        return bytes(b) + bytes([rng.randrange(256)])
    op = rng.randrange(7)
    if op == 0:
        for _ in range(rng.choice([1, 1, 2, 4, 8])):
            i = rng.randrange(lo, hi)
            b[i] ^= 1 << rng.randrange(8)
    elif op == 1:
        for _ in range(rng.choice([1, 2, 4])):
            b[rng.randrange(lo, hi)] = rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE])
    elif op == 2:
        i = rng.randrange(lo, hi)
        del b[i: i + rng.choice([1, 2, 4, 8, 64, 4096])]
    elif op == 3:
        i = rng.randrange(lo, hi)
        n = rng.choice([1, 8, 64, 512])
        b[i:i] = b[i: i + n]
    elif op == 4:
        i = rng.randrange(lo, hi)
        n = rng.choice([1, 4, 8, 32])
        b[i: i + n] = rng.randbytes(n)
    elif op == 5:
        del b[rng.randrange(lo, hi):]
    else:
        b += rng.randbytes(rng.choice([1, 7, 100]))
    return bytes(b)


# --------------------------------------------------------------------------- JSON

def absurd_value(rng, current=None):
    """A JSON value of the wrong type or an absurd size."""
    choices = [
        2**63, 2**64, 2**31, -1, 0, -(2**63), 10**30, 1e308, -1e308, float("nan"), float("inf"),
        -float("inf"), 0.5, 1.5, -0.0, True, False, None, "", "0", "32", "x" * rng.choice([1, 1000, 100_000]),
        "\ud800", "\x00", [], {}, [1, 2], [[]], {"a": 1}, [None], ["a", "b"], [2**63], list(range(rng.choice([3, 1000]))),
    ]
    if isinstance(current, bool):
        choices += [0, 1, "true", None]
    elif isinstance(current, int):
        choices += [current + 1, current - 1, -current, current * 2**20, str(current), float(current) + 0.5,
                    [current]]
    elif isinstance(current, float):
        choices += [current * 1e300, -current, str(current)] + ([int(current)] if math.isfinite(current) else [])
    elif isinstance(current, str):
        choices += [current + "x", current[: len(current) // 2], current.upper(), 7, [current], {current: current},
                    current * 1000, current.encode("utf-8", "surrogatepass").decode("latin-1")]
    elif isinstance(current, list):
        choices += [current[:1], current + current, [current], current[::-1], {"0": current}, len(current)]
    elif isinstance(current, dict):
        choices += [list(current), [current], {k: None for k in current}, str(current)[:50]]
    return rng.choice(choices)


def _walk(rng, obj, focus: tuple[str, ...] = ()):
    """A random (container, key) inside obj, by a walk from the root that stops early at times."""
    parent, key = None, None
    cur = obj
    depth = 0
    while isinstance(cur, (dict, list)) and cur:
        if isinstance(cur, dict):
            keys = list(cur)
            hot = [k for k in keys if k in focus]
            k = rng.choice(hot) if hot and rng.random() < 0.5 else rng.choice(keys)
        else:
            k = rng.randrange(len(cur))
        parent, key, cur = cur, k, cur[k]
        depth += 1
        if rng.random() < 0.25 and depth >= 1:
            break
    return parent, key


def mutate_json_value(rng, obj, focus: tuple[str, ...] = ()):
    """obj (parsed JSON) with one change: a value swapped for one of another type or an absurd
    size, a key deleted, a container emptied or duplicated, a deep nest. Changes obj in place
    and returns it (the root itself may be replaced)."""
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        parent, key = _walk(rng, obj, focus)
        op = rng.random()
        if parent is None:
            obj = absurd_value(rng, obj) if op < 0.5 else [obj]
            continue
        if op < 0.55:
            parent[key] = absurd_value(rng, parent[key])
        elif op < 0.75:
            del parent[key]
        elif op < 0.82 and isinstance(parent, dict):
            parent[f"{key}_"] = parent[key]
            parent[rng.choice(["", " ", key.upper() if isinstance(key, str) else "k", "\u0000"])] = parent.pop(key)
        elif op < 0.9:
            nest = rng.choice([50, 5000, 200_000])
            if nest < 1000:
                v = parent[key]
                for _ in range(nest):
                    v = [v]
                parent[key] = v
            else:
                parent[key] = _DeepNest(nest)
        elif isinstance(parent, list):
            parent.insert(key, absurd_value(rng))
        else:
            parent[key] = [parent[key]] * rng.choice([2, 3])
    return obj


class _DeepNest:
    """Stands for '[' * n + ']' * n in dump_json (too deep to build as Python lists)."""

    def __init__(self, n: int):
        self.n = n


def dump_json(rng, obj) -> bytes:
    marks: list[_DeepNest] = []

    def default(o):
        if isinstance(o, _DeepNest):
            marks.append(o)
            return f"@@DEEP{len(marks) - 1}@@"
        raise TypeError

    text = json.dumps(obj, ensure_ascii=rng.random() < 0.5, default=default,
                      indent=rng.choice([None, 2]), allow_nan=True)
    for i, m in enumerate(marks):
        text = text.replace(f'"@@DEEP{i}@@"', "[" * m.n + "]" * m.n)
    return text.encode("utf-8", "surrogatepass")


def mutate_json(rng, data: bytes, focus: tuple[str, ...] = ()) -> bytes:
    """Structure-aware JSON damage (most of the time), else raw damage of the text."""
    r = rng.random()
    if r < 0.8:
        try:
            obj = json.loads(data)
        except ValueError:
            return mutate_bytes(rng, data)
        return dump_json(rng, mutate_json_value(rng, obj, focus))
    if r < 0.85:
        return rng.choice([b"", b"null", b"[]", b"\xef\xbb\xbf" + data, data + b"\n{}", b'{"a": 1, "a": 2}'])
    return mutate_bytes(rng, data)


# --------------------------------------------------------------------------- GGUF

GGUF_TYPES = {  # value type -> struct format, for the scalar types
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


@dataclass
class Field:
    off: int
    width: int     # 4 or 8 bytes (numbers), else the byte length of a string/blob
    kind: str      # n_tensors n_kv key_len vtype arr_type arr_len str_len scalar n_dims dim ttype toff str


@dataclass
class GGUFLayout:
    fields: list[Field]
    kvs: list[tuple[int, int, str]]          # (start, end, key)
    tis: list[tuple[int, int, str]]          # (start, end, name)
    kv_start: int
    ti_start: int
    header_end: int
    data_start: int
    arch: str


def gguf_layout(data: bytes) -> GGUFLayout:
    """Where every field of a valid GGUF (a seed) lies."""
    fields: list[Field] = []
    pos = 24
    fields += [Field(8, 8, "n_tensors"), Field(16, 8, "n_kv")]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    arch = ""
    align = 32

    def string(kind="str"):
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        fields.append(Field(pos, 8, kind + "_len" if kind != "str" else "str_len"))
        fields.append(Field(pos + 8, n, "str"))
        s = data[pos + 8: pos + 8 + n].decode("utf-8", "replace")
        pos += 8 + n
        return s

    def value(t):
        nonlocal pos
        if t == STRING:
            return string()
        if t == ARRAY:
            (sub,) = struct.unpack_from("<I", data, pos)
            (n,) = struct.unpack_from("<Q", data, pos + 4)
            fields.append(Field(pos, 4, "arr_type"))
            fields.append(Field(pos + 4, 8, "arr_len"))
            pos += 12
            if sub in GGUF_TYPES and sub != STRING:
                w = struct.calcsize(GGUF_TYPES[sub])
                for i in range(min(n, 4)):
                    fields.append(Field(pos + i * w, w, "scalar"))
                pos += w * n
                return None
            for i in range(n):
                v = value(sub)
                if i > 8 and sub == STRING:  # long string arrays: keep a sample of their fields
                    del fields[-2:]
            return v
        fmt = GGUF_TYPES[t]
        fields.append(Field(pos, struct.calcsize(fmt), "scalar"))
        (v,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v

    kvs, tis = [], []
    kv_start = pos
    for _ in range(n_kv):
        start = pos
        key = string("key")
        (t,) = struct.unpack_from("<I", data, pos)
        fields.append(Field(pos, 4, "vtype"))
        pos += 4
        v = value(t)
        if key == "general.architecture":
            arch = v
        if key == "general.alignment":
            align = v
        kvs.append((start, pos, key))
    ti_start = pos
    for _ in range(n_tensors):
        start = pos
        name = string()
        (nd,) = struct.unpack_from("<I", data, pos)
        fields.append(Field(pos, 4, "n_dims"))
        pos += 4
        for _ in range(nd):
            fields.append(Field(pos, 8, "dim"))
            pos += 8
        fields.append(Field(pos, 4, "ttype"))
        fields.append(Field(pos + 4, 8, "toff"))
        pos += 12
        tis.append((start, pos, name))
    return GGUFLayout(fields, kvs, tis, kv_start, ti_start, pos, -(-pos // align) * align, arch)


def _gguf_str(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def random_gguf_value(rng, t: int | None = None, depth: int = 0) -> tuple[int, bytes]:
    """(value type, encoded value): any type, sizes and counts that lie at times."""
    if t is None:
        t = rng.choice(list(GGUF_TYPES) + [STRING, STRING, ARRAY, ARRAY, 13, 2**31])
    if t in GGUF_TYPES:
        fmt = GGUF_TYPES[t]
        bits = struct.calcsize(fmt) * 8
        if fmt in ("<f", "<d"):
            return t, struct.pack(fmt, rng.choice([0.0, -1.0, 1e38, float("nan"), float("inf"), 1e-45]))
        v = interesting_int(rng, bits)
        return t, v.to_bytes(bits // 8, "little")
    if t == STRING:
        s = rng.choice([b"", b"llama", b"gpt2", b"\xff\xfe", "✓".encode() * 3, b"x" * 300, b"\x00"])
        if rng.random() < 0.1:  # a length that lies
            return t, struct.pack("<Q", interesting_int(rng)) + s
        return t, _gguf_str(s)
    if t == ARRAY:
        sub = rng.choice(list(GGUF_TYPES) + [STRING, STRING] + ([ARRAY] if depth < 3 else []) + [99])
        n = rng.choice([0, 1, 2, 3, 10])
        elem = sub if sub in GGUF_TYPES or sub in (STRING, ARRAY) else 0
        # an element is its bare value; an array element is (type, count, elements) likewise
        items = b"".join(random_gguf_value(rng, elem, depth + 1)[1] for _ in range(n))
        claimed = n if rng.random() < 0.8 else interesting_int(rng)
        return t, struct.pack("<IQ", sub, claimed) + items
    return t, rng.randbytes(rng.choice([0, 4, 8]))


IMPORTANT_KEYS = ["general.alignment", "general.architecture", "general.name", "general.file_type",
                  "general.quantization_version", "{a}.block_count", "{a}.attention.head_count",
                  "{a}.attention.head_count_kv", "{a}.embedding_length", "{a}.context_length",
                  "{a}.feed_forward_length", "{a}.expert_count", "{a}.rope.freq_base", "{a}.vocab_size",
                  "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                  "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.scores",
                  "tokenizer.ggml.bos_token_id", "tokenizer.chat_template"]


def mutate_gguf(rng, data: bytes, layout: GGUFLayout | None = None) -> bytes:
    """One structure-aware change to a valid GGUF: a number field set to an interesting value,
    a key-value or tensor info removed, duplicated, retyped or inserted, a tensor's dims, type
    or offset changed, data bytes set to NaN/Inf, or raw damage in the header."""
    lay = layout or gguf_layout(data)
    r = rng.random()
    b = bytearray(data)
    if r < 0.35:  # one number field
        weights = {"arr_len": 6, "str_len": 3, "key_len": 2, "n_kv": 2, "n_tensors": 2, "vtype": 2,
                   "arr_type": 3, "n_dims": 3, "dim": 4, "ttype": 3, "toff": 3, "scalar": 2}
        nums = [f for f in lay.fields if f.kind in weights]
        f = rng.choices(nums, [weights[x.kind] for x in nums])[0]
        cur = int.from_bytes(b[f.off: f.off + f.width], "little")
        if f.kind in ("vtype", "arr_type") and rng.random() < 0.7:
            v = rng.choice([0, 1, 4, 6, 7, 8, 9, 10, 12, 13, 255, 2**31])
        elif f.kind == "ttype" and rng.random() < 0.7:
            v = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 14, 16, 23, 30, 31, 39, 40, 41, 2**31])
        else:
            v = interesting_int(rng, f.width * 8, cur, len(data))
        b[f.off: f.off + f.width] = v.to_bytes(f.width, "little")
        return bytes(b)
    if r < 0.45:  # raw damage in the header
        return mutate_bytes(rng, data, 0, lay.header_end)
    if r < 0.52:  # truncation
        cut = rng.randrange(lay.header_end) if rng.random() < 0.6 else rng.randrange(lay.header_end, len(data))
        return data[:cut]
    if r < 0.58:  # NaN, Inf or noise in tensor data
        if len(data) <= lay.data_start:
            return mutate_bytes(rng, data)
        i = rng.randrange(lay.data_start, len(data))
        b[i: i + 4] = rng.choice([struct.pack("<f", float("nan")), struct.pack("<f", float("inf")),
                                  b"\x00\x7c\x00\x7c", b"\xff\x7f\xff\x7f", rng.randbytes(4)])
        return bytes(b[:len(data)])
    # structural: rebuild the header (counts updated, data re-aligned)
    kvs = [bytes(data[s:e]) for s, e, _ in lay.kvs]
    tis = [bytes(data[s:e]) for s, e, _ in lay.tis]
    n_tensors, n_kv = len(tis), len(kvs)
    op = rng.randrange(6)
    if op == 0 and kvs:      # drop a key-value
        kvs.pop(rng.randrange(len(kvs)))
    elif op == 1 and kvs:    # duplicate one
        i = rng.randrange(len(kvs))
        kvs.insert(rng.randrange(len(kvs) + 1), kvs[i])
    elif op == 2:            # insert a key (often an important one) with a value of any type
        key = rng.choice(IMPORTANT_KEYS + ["fuzz.extra", ""]).format(a=lay.arch or "llama").encode()
        if rng.random() < 0.5:  # replace the existing one: a known key with the wrong type or value
            kvs = [kv for kv, (_s, _e, k) in zip(kvs, lay.kvs) if k.encode() != key]
        t, enc = random_gguf_value(rng)
        kvs.insert(rng.randrange(len(kvs) + 1), _gguf_str(key) + struct.pack("<I", t) + enc)
    elif op == 3 and tis:    # a tensor info rebuilt with other dims / type / offset / name
        i = rng.randrange(len(tis))
        ti = tis[i]
        (n,) = struct.unpack_from("<Q", ti, 0)
        name = ti[8: 8 + n]
        (nd,) = struct.unpack_from("<I", ti, 8 + n)
        dims = list(struct.unpack_from(f"<{nd}Q", ti, 12 + n))
        t, off = struct.unpack_from("<IQ", ti, 12 + n + 8 * nd)
        what = rng.randrange(5)
        if what == 0:
            dims = rng.choice([[], [0], [2**60], [2**32, 2**32], [1] * rng.choice([1, 5, 40]), dims[::-1],
                               dims + [2**31], [d * 2 for d in dims], [2**63 - 1, 2]])
            nd = len(dims)
        elif what == 1:
            t = rng.choice(range(42))
        elif what == 2:
            off = interesting_int(rng, 64, off, len(data))
        elif what == 3:
            name = rng.choice([b"", b"x" * 64, b"x" * 200, lay.tis[0][2].encode(), b"\xff", name + b".extra"])
        else:
            nd = interesting_int(rng, 32)
        tis[i] = _gguf_str(name) + struct.pack("<I", nd) + b"".join(struct.pack("<Q", d) for d in dims) \
            + struct.pack("<IQ", t, off)
    elif op == 4 and tis:    # drop or duplicate a tensor info
        i = rng.randrange(len(tis))
        if rng.random() < 0.5:
            tis.pop(i)
        else:
            tis.insert(i, tis[i])
    else:                    # swap two key-values (order should not matter)
        if len(kvs) > 1:
            i, j = rng.randrange(len(kvs)), rng.randrange(len(kvs))
            kvs[i], kvs[j] = kvs[j], kvs[i]
    # counts follow the change most of the time; sometimes they keep lying
    if rng.random() < 0.9:
        n_tensors, n_kv = len(tis), len(kvs)
    head = bytes(data[:8]) + struct.pack("<QQ", n_tensors, n_kv) + b"".join(kvs) + b"".join(tis)
    head += b"\x00" * (-len(head) % 32)  # the seeds use the default alignment
    return head + bytes(data[lay.data_start:])


# --------------------------------------------------------------------------- safetensors

def mutate_safetensors(rng, data: bytes) -> bytes:
    """A safetensors file with its header JSON damaged the way a broken writer would (dtype,
    shape, data_offsets of one tensor; __metadata__), its length field or data changed."""
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8: 8 + n])
    body = data[8 + n:]
    r = rng.random()
    if r < 0.12:
        return interesting_int(rng, 64, n, len(data)).to_bytes(8, "little") + data[8:]
    if r < 0.2:
        return mutate_bytes(rng, data) if rng.random() < 0.5 else data[: rng.randrange(len(data))]
    if r < 0.25:
        b = bytearray(data)
        i = rng.randrange(8 + n, len(data)) if len(data) > 8 + n else 8
        b[i: i + 4] = rng.choice([b"\x00\x00\xc0\x7f", b"\x00\x7c\x00\x7c", b"\x80\x7f\x80\x7f"])
        return bytes(b[: len(data)])
    names = [k for k in header if k != "__metadata__"]
    if r < 0.7 and names:
        name = rng.choice(names)
        e = header[name]
        field = rng.choice(["dtype", "shape", "data_offsets", "data_offsets", "shape", "entry"])
        a, z = e["data_offsets"]
        if field == "dtype":
            e["dtype"] = rng.choice(["F64", "I8", "I64", "U8", "BOOL", "F8_E4M3", "f32", "", 5, None, ["F32"]])
        elif field == "shape":
            e["shape"] = rng.choice([[2**60], [-1, 4], [], [0], [1.5], ["3"], [2**32, 2**32], [2**63, 2],
                                     [1] * 100_000, e["shape"][::-1], e["shape"] + [1], e["shape"] + [2],
                                     None, 5, "x", [[1]]])
        elif field == "data_offsets":
            other = header[rng.choice(names)]["data_offsets"]
            e["data_offsets"] = rng.choice([[z, a], [-1, z], [a, 2**64], [a, a], other, [a + 1, z + 1],
                                            [float(a), float(z)], [str(a), str(z)], [a, z, z], [a], None,
                                            [a, len(body) + 1], [2**63, 2**63 + z - a]])
        else:
            header[name] = absurd_value(rng, e)
        return _st(rng, header, body)
    if r < 0.8:
        header["__metadata__"] = absurd_value(rng, header.get("__metadata__"))
        return _st(rng, header, body)
    return _st(rng, mutate_json_value(rng, header, ("shape", "dtype", "data_offsets")), body)


def _st(rng, header, body: bytes) -> bytes:
    raw = dump_json(rng, header)
    if rng.random() < 0.8:
        raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + body


# --------------------------------------------------------------------------- protobuf

def _varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 70) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    val = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        val |= (b & 0x7F) << shift
        if b < 0x80:
            return val, pos
        shift += 7


def parse_proto(buf: bytes, nested: dict[int, dict] | None = None) -> list:
    """A protobuf message as [field number, wire type, value]; value is a sub-list for the
    fields named in `nested` ({field: nested spec of the sub-message}), else int or bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _read_varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos: pos + 8], pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            val, pos = buf[pos: pos + n], pos + n
            if nested is not None and num in nested:
                val = parse_proto(val, nested[num])
        elif wire == 5:
            val, pos = buf[pos: pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        out.append([num, wire, val])
    return out


def dump_proto(msg: list) -> bytes:
    out = bytearray()
    for num, wire, val in msg:
        out += _varint((num << 3) | wire)
        if isinstance(val, list):
            val = dump_proto(val)
        if wire == 0:
            out += _varint(val) if isinstance(val, int) else bytes(val)
        elif wire == 2:
            out += _varint(len(val)) + bytes(val)
        else:
            out += bytes(val)
    return bytes(out)


SPM_SPEC = {1: {}, 2: {}, 3: {}, 5: {}}   # ModelProto: pieces, trainer, normalizer, denormalizer


def mutate_spm(rng, data: bytes) -> bytes:
    """A SentencePiece ModelProto with one piece, type, score, normalizer flag or varint damaged,
    re-serialized with consistent lengths (so the protobuf parser accepts it) most of the time."""
    r = rng.random()
    if r < 0.2:
        return mutate_bytes(rng, data)
    if r < 0.3:  # a varint that never ends, a length past the end, a group wire type
        i = rng.randrange(len(data))
        junk = rng.choice([b"\xff" * 11, b"\x0a\xff\xff\xff\xff\x0f", b"\x0b", b"\x0f", b"\x0a\x80"])
        return data[:i] + junk + (data[i:] if rng.random() < 0.5 else b"")
    msg = parse_proto(data, SPM_SPEC)
    pieces = [f for f in msg if f[0] == 1]
    op = rng.randrange(7)
    if op == 0 and pieces:       # the piece text
        p = rng.choice(pieces)[2]
        for f in p:
            if f[0] == 1:
                f[2] = rng.choice([b"", b"\xff\xfe", b"\xc3", b"x" * 10_000, pieces[0][2][0][2]
                                   if pieces[0][2] and pieces[0][2][0][0] == 1 else b"a"])
    elif op == 1 and pieces:     # the piece type
        p = rng.choice(pieces)[2]
        for f in p:
            if f[0] == 3:
                f[2] = interesting_int(rng, 64)
        if not any(f[0] == 3 for f in p):
            p.append([3, 0, rng.choice([0, 2, 3, 4, 5, 6, 7, 100, 2**63])])
    elif op == 2 and pieces:     # the score
        p = rng.choice(pieces)[2]
        for f in p:
            if f[0] == 2:
                f[2] = rng.choice([struct.pack("<f", math.nan), struct.pack("<f", math.inf), b"\x00\x00",
                                   b"\x00" * 8])
    elif op == 3 and pieces:     # drop or duplicate pieces
        i = msg.index(rng.choice(pieces))
        if rng.random() < 0.5:
            del msg[i: i + rng.choice([1, 1, 10, 1000])]
        else:
            msg.insert(i, [1, 2, [list(f) for f in msg[i][2]]])
    elif op == 4:                # a field's wire type changed (a string sent as a varint, ...)
        target = rng.choice(pieces)[2] if pieces and rng.random() < 0.6 else msg
        if target:
            f = rng.choice(target)
            f[1] = rng.choice([0, 1, 2, 5])
            f[2] = {0: interesting_int(rng, 64), 1: b"\x00" * 8, 2: b"\x01\x02", 5: b"\x00" * 4}[f[1]]
    elif op == 5:                # normalizer / trainer spec flags
        for f in msg:
            if f[0] in (2, 3) and isinstance(f[2], list) and f[2]:
                g = rng.choice(f[2])
                if g[1] == 0:
                    g[2] = interesting_int(rng, 64)
                elif g[1] == 2:
                    g[2] = rng.choice([b"", b"\xff", b"x" * 1000])
    else:                        # unknown fields
        msg.insert(rng.randrange(len(msg) + 1), [rng.choice([6, 7, 99, 2**28]), rng.choice([0, 2, 5]),
                                                 rng.choice([b"\x00\x00\x00\x00", 5])])
    return dump_proto(_fix_wires(msg))


def _fix_wires(msg: list) -> list:
    """Values that no longer fit their wire type get a fitting value (the mutation changed it)."""
    for f in msg:
        num, wire, val = f
        if wire == 0 and not isinstance(val, int):
            f[2] = 5
        elif wire in (1, 5) and not isinstance(val, (bytes, bytearray)):
            f[2] = b"\x00" * (8 if wire == 1 else 4)
        elif wire == 2 and isinstance(val, int):
            f[2] = b"\x00"
        elif isinstance(val, list):
            _fix_wires(val)
    return msg


# --------------------------------------------------------------------------- Jinja chat templates

HOSTILE_JINJA = [
    "{% for i in range(10**9) %}x{% endfor %}", "{% for i in range(99999999999999) %}{% endfor %}",
    "{{ 'x' * 10**10 }}", "{{ 'x' * 10**7 }}", "{{ [0] * 10**9 }}", "{{ 10**10**10 }}", "{{ 2**99999999 }}",
    "{{ 7 ** 7 ** 7 ** 7 }}", "{{ (10**100000) * (10**100000) }}",
    "{% macro r(n) %}{{ r(n) }}{% endmacro %}{{ r(1) }}",
    "{% set ns = namespace(s='xy') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='xy') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ messages.__class__.__init__.__globals__ }}",
    "{{ raise_exception('no system messages') }}", "{{ messages[99]['content'] }}", "{{ messages[0]['nope'] + 1 }}",
    "{{ 1/0 }}", "{{ 1//0 }}", "{{ 'x' | center(10**10) }}", "{{ ('x\n' * 1000) | indent(10**6) }}",
    "{{ lipsum(10**6) }}", "{{ lipsum(100, min=10**6, max=10**7) }}", "{{ range(10**6) | list | length }}",
    "{{ '%s' % messages }}", "{{ '%*d' % (10**9, 1) }}", "{{ 'a' | int }}", "{{ strftime_now('%Y' * 10**6) }}",
    "{{ messages | tojson(indent=10**8) }}", "{{ '{:>1000000000}'.format(1) }}", "{{ 'x'.ljust(10**10) }}",
    "{{ 'x'.zfill(10**10) }}", "{{ 'x\tx'.expandtabs(10**9) }}", "{{ 'ab' | wordwrap(1) }}",
    "{% filter upper %}{{ 'x' * 10**9 }}{% endfilter %}", "{{ messages | map(attribute='content') | join('x' * 10**8) }}",
    "{% include 'other.jinja' %}", "{% extends 'base.jinja' %}", "{% import 'x.jinja' as x %}",
    "{{ cycler(*range(10**7)) }}", "{% set x = [] %}{% for i in range(10) %}{% set _ = x.append(i) %}{% endfor %}",
    "{{ messages | batch(10**9) | list }}", "{{ messages | slice(10**9) | list }}", "{{ 'x' | truncate(-1) }}",
    "{{ self.__dict__ }}", "{{ loop.cycle }}", "{{ undefined_name.attr }}", "{{ none_thing() }}",
    "{{ messages[0].content[::-1] * 99999999 }}", "{{ (messages * 10**8) | length }}",
    "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% endfor %}{% endfor %}{% endfor %}",
    "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}", "{{ range(3) | sum(start=[]) }}",
    "{{ messages | dictsort }}", "{{ 'x' | format(*range(10**6)) }}", "{{ {}.get }}", "{{ 9e999 | int }}",
    "{{ (2**64) | float | int }}", "{{ 'abc' | replace('', 'x' * 10**4) | replace('', 'x' * 10**4) }}",
]
JINJA_NOISE = ["{%", "%}", "{{", "}}", "{#", "{% endfor %}", "{% endif %}", "{% if %}", "{% for m in %}",
               "{% else %}", "{{ }}", "{% set %}", "|", "'", '"', "\\", "\x00", "\ud800", "{%- raw %}"]


def mutate_jinja(rng, data: bytes) -> bytes:
    """A chat template with a hostile construct spliced in at a tag boundary (a loop, recursion,
    a huge string or number, sandbox escapes), or its syntax broken."""
    text = data.decode("utf-8")
    cuts = [0, len(text)] + [i for i in range(len(text)) if text.startswith(("{%", "{{"), i)]
    cuts += [i + 2 for i in range(len(text)) if text.startswith(("%}", "}}"), i)]
    i = rng.choice(cuts)
    r = rng.random()
    if r < 0.6:
        text = text[:i] + rng.choice(HOSTILE_JINJA) + text[i:]
    elif r < 0.8:
        text = text[:i] + rng.choice(JINJA_NOISE) + text[i:]
    elif r < 0.9:
        j = rng.randrange(len(text) + 1)
        a, b = min(i, j), max(i, j)
        text = text[:a] + text[b:] if rng.random() < 0.5 else text[:b] + text[a:b] + text[b:]
    else:
        return mutate_bytes(rng, data)
    return text.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- legacy imatrix .dat

def dat_fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, kind) of every i32 of a valid legacy imatrix .dat: the entry count, each entry's
    name length, ncall and nval, and the trailer's chunk count and dataset name length."""
    out, pos = [(0, "n")], 4
    (n,) = struct.unpack_from("<i", data, 0)
    for _ in range(n):
        (ln,) = struct.unpack_from("<i", data, pos)
        out.append((pos, "len"))
        pos += 4 + ln
        out += [(pos, "ncall"), (pos + 4, "nval")]
        (nval,) = struct.unpack_from("<i", data, pos + 4)
        pos += 8 + 4 * nval
    if pos + 4 <= len(data):
        out.append((pos, "chunks"))
        if pos + 8 <= len(data):
            out.append((pos + 4, "dataset_len"))
    return out


def mutate_dat(rng, data: bytes) -> bytes:
    """A legacy imatrix with one i32 field set to an interesting value (signed too), a value
    made NaN/negative, truncated, or damaged raw."""
    r = rng.random()
    b = bytearray(data)
    if r < 0.55:
        off, _kind = rng.choice(dat_fields(data))
        v = interesting_int(rng, 32, struct.unpack_from("<I", data, off)[0], len(data))
        b[off: off + 4] = v.to_bytes(4, "little")
        return bytes(b)
    if r < 0.7:
        i = rng.randrange(4, len(data) - 4)
        b[i: i + 4] = rng.choice([struct.pack("<f", float("nan")), struct.pack("<f", -1.0),
                                  struct.pack("<f", float("inf")), rng.randbytes(4)])
        return bytes(b)
    if r < 0.8:
        return data[: rng.randrange(len(data))]
    return mutate_bytes(rng, data)
