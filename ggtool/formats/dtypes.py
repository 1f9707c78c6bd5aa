"""The one table of GGUF metadata value types, for the reader and the writer alike."""

from __future__ import annotations

from gguf import GGUFValueType as V

# value type -> (struct format of one scalar, numpy dtype of an array of them), little-endian
SCALARS: dict[V, str] = {
    V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I", V.INT32: "<i",
    V.FLOAT32: "<f", V.BOOL: "<?", V.UINT64: "<Q", V.INT64: "<q", V.FLOAT64: "<d",
}
NUMPY: dict[V, str] = {
    V.UINT8: "<u1", V.INT8: "<i1", V.UINT16: "<u2", V.INT16: "<i2", V.UINT32: "<u4", V.INT32: "<i4",
    V.FLOAT32: "<f4", V.BOOL: "?", V.UINT64: "<u8", V.INT64: "<i8", V.FLOAT64: "<f8",
}
