"""A small, independent reader of v4.cpp's model file (docs/FORMAT.md, version 1), in numpy.

  from v4file import V4File
  f = V4File("model.v4")               # header, metadata and tensor table, checked; data mapped
  f.meta["deepseek_v4.hidden_size"]    # metadata values: int, float, bool, str, bytes or list
  f.tensors["norm.weight"].shape       # table entries (ne innermost first, as in the file)
  f.array("layers.0.attn.wq_a.weight") # float32 numpy array, PyTorch order (ne reversed), dequantized

  python tools/train/v4file.py FILE    # prints the header, metadata keys and the tensor table

Written from docs/FORMAT.md alone (nothing of the C++ is imported), so that it can check the
C++ writer. Dequantizes f32, bf16, f16, fp8_e4m3 (with its e8m0 scales tensor and scale_block),
e8m0 and i32; other types are listed but `array()` refuses them with a clear error.
Checksums (xxh3) are not checked: `v4 inspect --verify` does that.

pip requirements: numpy
"""
import mmap
import struct
import sys
from dataclasses import dataclass

import numpy as np

MAGIC = b"V4CPPMDL"
HEADER_SIZE = 80

# Metadata value types (docs/FORMAT.md, "Metadata section"): id -> (name, struct code, size).
SCALAR_TYPES = {1: ("u8", "<B", 1), 2: ("i32", "<i", 4), 3: ("u32", "<I", 4), 4: ("i64", "<q", 8),
                5: ("u64", "<Q", 8), 6: ("f32", "<f", 4), 7: ("f64", "<d", 8), 8: ("bool", "<B", 1)}
T_STRING, T_BLOB, T_ARRAY = 9, 10, 11

# Tensor types this reader decodes: name -> (elements per block, bytes per block).
TYPE_LAYOUT = {"f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "fp8_e4m3": (1, 1), "e8m0": (1, 1), "i32": (1, 4)}
SCALED_TYPES = ("fp8_e4m3", "mxfp4")


class V4FileError(Exception):
    pass


@dataclass
class TensorEntry:
    name: str
    type_id: int
    type_name: str
    ne: tuple            # elements per dim, innermost first, n_dims long
    offset: int          # relative to data_offset
    size: int
    xxh3: int
    scale_block: tuple   # (elements along dim 0, rows along dim 1); (0, 0) when unscaled
    scales: str          # name of the e8m0 scales tensor; "" when unscaled

    @property
    def shape(self):
        """numpy/PyTorch order: outermost first."""
        return tuple(reversed(self.ne))


class _Cursor:
    """Reads packed little-endian fields of one section, checking every length against its end."""

    def __init__(self, buf, start, end, what):
        self.buf, self.pos, self.end, self.what = buf, start, end, what

    def need(self, n, field):
        if n > self.end - self.pos:
            raise V4FileError("%s truncated: %s needs %d bytes, %d left in the section (at byte %d)"
                              % (self.what, field, n, self.end - self.pos, self.pos))

    def unpack(self, fmt, field):
        size = struct.calcsize(fmt)
        self.need(size, field)
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def raw(self, n, field):
        self.need(n, field)
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    def str32(self, field):
        n = self.unpack("<I", field + " length")
        return self.raw(n, field).decode("utf-8", errors="replace")


def _fp8_e4m3_table():
    """float32 value of each e4m3fn byte: bias 7, no infinities, S.1111.111 is NaN."""
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> 3) & 0xF
    man = codes & 0x7
    value = np.where(exp == 0, man / 8.0 * 2.0 ** -6, (1 + man / 8.0) * 2.0 ** (exp - 7.0))
    value = sign * value
    value[(codes & 0x7F) == 0x7F] = np.nan
    return value.astype(np.float32)


FP8_E4M3 = _fp8_e4m3_table()


def e8m0_to_f32(codes):
    """2^(code - 127); 0xFF is NaN."""
    codes = np.asarray(codes, dtype=np.uint8)
    out = np.ldexp(np.float32(1.0), codes.astype(np.int32) - 127).astype(np.float32)
    out[codes == 0xFF] = np.nan
    return out


class V4File:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            try:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # empty file
                raise V4FileError("%s: empty file, not a v4 model file" % path)
        try:
            self._read_header()
            self.meta = self._read_metadata()
            self.tensors = self._read_table()
        except V4FileError as e:
            raise V4FileError("%s: %s" % (path, e)) from None

    # ---------------------------------------------------------------- structure
    def _read_header(self):
        buf = self._map
        if len(buf) < HEADER_SIZE:
            raise V4FileError("file of %d bytes is shorter than the 80-byte header" % len(buf))
        if buf[:8] != MAGIC:
            raise V4FileError("wrong magic: not a v4 model file (at byte 0)")
        (version, flags, alignment, _reserved, meta_off, meta_size, data_off, data_size,
         table_off, table_size, file_size) = struct.unpack_from("<IIIIQQQQQQQ", buf, 8)
        if version != 1:
            raise V4FileError("unsupported version %d (this reader knows version 1) (at byte 8)" % version)
        if flags != 0:
            raise V4FileError("unknown flags 0x%x (version 1 defines none) (at byte 12)" % flags)
        if alignment < 64 or alignment > 2 ** 20 or alignment & (alignment - 1):
            raise V4FileError("alignment %d is not a power of two in [64, 2^20] (at byte 16)" % alignment)
        if file_size != len(buf):
            raise V4FileError("file truncated: header says %d bytes, the file has %d (at byte 72)"
                              % (file_size, len(buf)))
        sections = [("metadata", meta_off, meta_size, 24), ("data", data_off, data_size, 40),
                    ("tensor table", table_off, table_size, 56)]
        for name, off, size, at in sections:
            if off < HEADER_SIZE or size > file_size - off:
                raise V4FileError("%s section [%d, +%d) lies outside the file (at byte %d)" % (name, off, size, at))
        if data_off % alignment:
            raise V4FileError("data offset %d is not a multiple of the alignment %d (at byte 40)" % (data_off, alignment))
        spans = sorted((off, off + size, name) for name, off, size, _ in sections if size)
        for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
            if b0 < a1:
                raise V4FileError("sections %s and %s overlap" % (an, bn))
        self.version, self.alignment = version, alignment
        self.meta_offset, self.meta_size = meta_off, meta_size
        self.data_offset, self.data_size = data_off, data_size
        self.table_offset, self.table_size = table_off, table_size

    def _read_value(self, cur, vtype, length, key):
        start = cur.pos
        if vtype in SCALAR_TYPES:
            tname, fmt, size = SCALAR_TYPES[vtype]
            if length != size:
                raise V4FileError("metadata '%s': %s value of %d bytes (expected %d) (at byte %d)"
                                  % (key, tname, length, size, start))
            value = cur.unpack(fmt, "value of '%s'" % key)
            if vtype == 8:
                if value not in (0, 1):
                    raise V4FileError("metadata '%s': bool value %d (at byte %d)" % (key, value, start))
                value = bool(value)
            return value
        if vtype == T_STRING:
            return cur.raw(length, "value of '%s'" % key).decode("utf-8", errors="replace")
        if vtype == T_BLOB:
            return cur.raw(length, "value of '%s'" % key)
        if vtype == T_ARRAY:
            if length < 12:
                raise V4FileError("metadata '%s': array value of %d bytes (at byte %d)" % (key, length, start))
            elem, count = cur.unpack("<IQ", "array header of '%s'" % key)
            body = length - 12
            if elem in SCALAR_TYPES:
                tname, fmt, size = SCALAR_TYPES[elem]
                if count * size != body:
                    raise V4FileError("metadata '%s': array of %d %s needs %d bytes, the value has %d (at byte %d)"
                                      % (key, count, tname, count * size, body, start))
                values = list(struct.unpack_from("<%d%s" % (count, fmt[1]), cur.buf, cur.pos)) if count else []
                cur.pos += body
                return [bool(v) for v in values] if elem == 8 else values
            if elem == T_STRING:
                end = cur.pos + body
                if count > body // 8:
                    raise V4FileError("metadata '%s': absurd string count %d (at byte %d)" % (key, count, start))
                sub = _Cursor(cur.buf, cur.pos, end, "metadata '%s'" % key)
                values = [sub.raw(sub.unpack("<Q", "string length"), "string").decode("utf-8", errors="replace")
                          for _ in range(count)]
                if sub.pos != end:
                    raise V4FileError("metadata '%s': string array does not fill its value (at byte %d)" % (key, sub.pos))
                cur.pos = end
                return values
            raise V4FileError("metadata '%s': arrays of type %d are not defined in version 1 (at byte %d)"
                              % (key, elem, start))
        return ("unknown type %d" % vtype, cur.raw(length, "value of '%s'" % key))  # skipped, kept raw

    def _read_metadata(self):
        cur = _Cursor(self._map, self.meta_offset, self.meta_offset + self.meta_size, "metadata")
        count = cur.unpack("<Q", "entry count")
        if count > self.meta_size // 17:  # key length 4 + key 1 + type 4 + length 8
            raise V4FileError("metadata: absurd entry count %d for a section of %d bytes" % (count, self.meta_size))
        meta = {}
        for _ in range(count):
            at = cur.pos
            key = cur.str32("key")
            vtype, length = cur.unpack("<IQ", "type and length of '%s'" % key)
            cur.need(length, "value of '%s'" % key)
            end = cur.pos + length
            if key in meta:
                raise V4FileError("metadata: duplicate key '%s' (at byte %d)" % (key, at))
            meta[key] = self._read_value(cur, vtype, length, key)
            if cur.pos != end:
                raise V4FileError("metadata '%s': value does not fill its %d bytes (at byte %d)" % (key, length, at))
        if cur.pos != cur.end:
            raise V4FileError("metadata section has %d bytes after the last entry" % (cur.end - cur.pos))
        return meta

    def _read_table(self):
        cur = _Cursor(self._map, self.table_offset, self.table_offset + self.table_size, "tensor table")
        count = cur.unpack("<Q", "tensor count")
        if count > self.table_size // 80:
            raise V4FileError("tensor table: absurd tensor count %d for a section of %d bytes" % (count, self.table_size))
        tensors = {}
        for index in range(count):
            at = cur.pos
            name = cur.str32("name")
            type_id = cur.unpack("<i", "type id")
            type_name = cur.str32("type name")
            n_dims = cur.unpack("<I", "n_dims")
            ne = cur.unpack("<4q", "ne")
            offset, size, xxh3 = cur.unpack("<QQQ", "offset, size, xxh3")
            scale_block = cur.unpack("<2i", "scale_block")
            scales = cur.str32("scales name")
            where = "tensor %d '%s'" % (index, name)
            if name in tensors:
                raise V4FileError("%s: duplicate tensor name (at byte %d)" % (where, at))
            if not 1 <= n_dims <= 4 or any(n < 0 for n in ne) or any(n != 1 for n in ne[n_dims:]):
                raise V4FileError("%s: bad shape n_dims %d, ne %s (at byte %d)" % (where, n_dims, list(ne), at))
            if size > self.data_size or offset > self.data_size - size:
                raise V4FileError("%s: data [%d, +%d) lies outside the data section of %d bytes (at byte %d)"
                                  % (where, offset, size, self.data_size, at))
            if (self.data_offset + offset) % self.alignment:
                raise V4FileError("%s: misaligned data: offset %d is not a multiple of %d (at byte %d)"
                                  % (where, offset, self.alignment, at))
            if type_name in TYPE_LAYOUT:
                block, block_bytes = TYPE_LAYOUT[type_name]
                elements = int(np.prod(ne, dtype=np.int64))
                if ne[0] % block or elements // block * block_bytes != size:
                    raise V4FileError("%s: %s of shape %s needs %d bytes, the table says %d (at byte %d)"
                                      % (where, type_name, list(ne[:n_dims]), elements // block * block_bytes, size, at))
            if (type_name in SCALED_TYPES) != bool(scales):
                raise V4FileError("%s: type %s with scales name '%s' (at byte %d)" % (where, type_name, scales, at))
            tensors[name] = TensorEntry(name, type_id, type_name, tuple(ne[:n_dims]), offset, size, xxh3,
                                        tuple(scale_block), scales)
        if cur.pos != cur.end:
            raise V4FileError("tensor table has %d bytes after the last entry" % (cur.end - cur.pos))
        for t in tensors.values():
            if t.scales:
                s = tensors.get(t.scales)
                if s is None:
                    raise V4FileError("tensor '%s': scales tensor '%s' is missing" % (t.name, t.scales))
                b0, b1 = t.scale_block
                want = (-(-t.ne[0] // b0), -(-(t.ne[1] if len(t.ne) > 1 else 1) // b1)) if b0 >= 1 and b1 >= 1 else None
                padded = tuple(s.ne) + (1,) * (4 - len(s.ne))
                full = tuple(t.ne) + (1,) * (4 - len(t.ne))
                if s.type_name != "e8m0" or want is None or padded != want + full[2:]:
                    raise V4FileError("tensor '%s': scales '%s' is %s %s, expected e8m0 %s for scale_block %s"
                                      % (t.name, s.name, s.type_name, list(s.ne), list(want or ()) + list(full[2:]),
                                         list(t.scale_block)))
        return tensors

    # ---------------------------------------------------------------- data
    def raw(self, name):
        """The tensor's bytes as a read-only uint8 numpy array (no copy)."""
        t = self._entry(name)
        start = self.data_offset + t.offset
        return np.frombuffer(self._map, dtype=np.uint8, count=t.size, offset=start)

    def _entry(self, name):
        t = self.tensors.get(name)
        if t is None:
            raise V4FileError("%s: no tensor '%s'" % (self.path, name))
        return t

    def array(self, name):
        """The tensor as a numpy array in PyTorch order (ne reversed): float32 for the float types
        (dequantized with their scales), int32 for i32."""
        t = self._entry(name)
        data = self.raw(name)
        shape = t.shape
        if t.type_name == "f32":
            return data.view("<f4").reshape(shape).astype(np.float32)
        if t.type_name == "f16":
            return data.view("<f2").reshape(shape).astype(np.float32)
        if t.type_name == "bf16":
            return (data.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
        if t.type_name == "i32":
            return data.view("<i4").reshape(shape).copy()
        if t.type_name == "e8m0":
            return e8m0_to_f32(data).reshape(shape)
        if t.type_name == "fp8_e4m3":
            codes = FP8_E4M3[data].reshape(shape)
            scales = self.array(t.scales)                      # [..., ceil(ne1/b1), ceil(ne0/b0)]
            b0, b1 = t.scale_block
            full = np.repeat(np.repeat(scales, b0, axis=-1), b1, axis=-2) if len(shape) > 1 \
                else np.repeat(scales, b0, axis=-1)
            full = full[..., :shape[-2], :shape[-1]] if len(shape) > 1 else full[..., :shape[-1]]
            return (codes * full).astype(np.float32)
        raise V4FileError("%s: tensor '%s' has type %s, which this reader does not dequantize "
                          "(it knows %s); convert with --type native, bf16 or fp8_e4m3"
                          % (self.path, name, t.type_name, ", ".join(TYPE_LAYOUT)))

    def close(self):
        self._map.close()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/train/v4file.py FILE.v4")
    try:
        f = V4File(sys.argv[1])
    except (OSError, V4FileError) as e:
        sys.exit("error: %s" % e)
    print("%s: version %d, alignment %d, %d metadata keys, %d tensors"
          % (f.path, f.version, f.alignment, len(f.meta), len(f.tensors)))
    for key, value in f.meta.items():
        text = repr(value)
        print("  %-40s %s" % (key, text if len(text) < 80 else text[:77] + "..."))
    for t in f.tensors.values():
        extra = "  scales %s %s" % (t.scales, list(t.scale_block)) if t.scales else ""
        print("  %-48s %-9s %-22s %10d B%s" % (t.name, t.type_name, list(t.shape), t.size, extra))


if __name__ == "__main__":
    main()
