"""Minimal reader for R lazy-load databases (Rdata.rdx + Rdata.rdb).

It reads just enough of R's XDR serialization format to get character vectors
out, which is how the janeaustenr package stores the six novels (one string per
printed line, "" between paragraphs). That lets us take the text from the
Debian package without installing R.

Usage as a library: read_character_vectors("<dir>/Rdata") -> {name: [lines]}.
Requirements: Python 3 standard library only.
"""
import bz2
import gzip
import lzma
import struct
import zlib

# R SEXP type codes used below (R internals, "serialize.c").
NILVALUE_SXP, EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP = 254, 242, 241, 253
UNBOUNDVALUE_SXP, MISSINGARG_SXP, BASENAMESPACE_SXP = 252, 251, 247
REFSXP, SYMSXP, CHARSXP, LISTSXP, LANGSXP, DOTSXP = 255, 1, 9, 2, 6, 17
LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 10, 13, 14, 16, 19
SINGLETONS = {NILVALUE_SXP, 0, EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP,
              UNBOUNDVALUE_SXP, MISSINGARG_SXP, BASENAMESPACE_SXP}


class _Unserializer:
    def __init__(self, data):
        self.data, self.pos, self.refs = data, 0, []

    def int32(self):
        value = struct.unpack(">i", self.data[self.pos:self.pos + 4])[0]
        self.pos += 4
        return value

    def length(self):
        n = self.int32()
        if n == -1:  # long vector: two more ints
            hi, lo = self.int32(), self.int32()
            n = (hi << 32) + lo
        return n

    def top(self):
        if self.data[:2] != b"X\n":
            raise ValueError("not an XDR-format R serialization (header %r)" % self.data[:2])
        self.pos = 2
        version = self.int32()
        self.int32()  # writer R version
        self.int32()  # minimal reader R version
        if version == 3:  # native encoding name follows
            n = self.int32()
            self.pos += n
        return self.item()

    def item(self):
        flags = self.int32()
        sxp = flags & 0xFF
        has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
        if sxp in SINGLETONS:
            return None
        if sxp == REFSXP:
            index = (flags >> 8) or self.int32()
            return self.refs[index - 1]
        if sxp == SYMSXP:
            symbol = self.item()
            self.refs.append(symbol)
            return symbol
        if sxp == CHARSXP:
            n = self.int32()
            if n == -1:  # NA_character_
                return None
            text = self.data[self.pos:self.pos + n].decode("utf-8", "replace")
            self.pos += n
            return text
        if sxp in (LISTSXP, LANGSXP, DOTSXP):
            return self.pairlist(has_attr, has_tag)
        if sxp == STRSXP:
            value = [self.item() for _ in range(self.length())]
        elif sxp in (LGLSXP, INTSXP):
            n = self.length()
            value = list(struct.unpack(">%di" % n, self.data[self.pos:self.pos + 4 * n]))
            self.pos += 4 * n
        elif sxp == REALSXP:
            n = self.length()
            value = list(struct.unpack(">%dd" % n, self.data[self.pos:self.pos + 8 * n]))
            self.pos += 8 * n
        elif sxp == VECSXP:
            value = [self.item() for _ in range(self.length())]
        else:
            raise ValueError("unsupported R object type %d at byte %d" % (sxp, self.pos))
        if has_attr:
            attrs = self.item()
            if sxp == VECSXP and isinstance(attrs, dict) and "names" in attrs:
                value = dict(zip(attrs["names"], value))
        return value

    def pairlist(self, has_attr, has_tag):
        out = {}
        while True:
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            car = self.item()
            out[tag if tag is not None else len(out)] = car
            flags = self.int32()
            sxp = flags & 0xFF
            has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
            if sxp in (NILVALUE_SXP, 0):
                return out
            if sxp not in (LISTSXP, LANGSXP, DOTSXP):
                raise ValueError("unexpected pairlist tail type %d" % sxp)


def _decompress_record(blob):
    # Each .rdb record: 4-byte big-endian uncompressed length, then a type byte
    # ('Z' zlib, '2' bzip2, 'X' xz, '0' none) or directly a zlib stream.
    size = struct.unpack(">I", blob[:4])[0]
    kind = blob[4:5]
    if kind == b"Z":
        data = zlib.decompress(blob[5:])
    elif kind == b"2":
        data = bz2.decompress(blob[5:])
    elif kind == b"X":
        data = lzma.decompress(blob[5:])
    elif kind == b"0":
        data = blob[5:]
    else:
        data = zlib.decompress(blob[4:])
    if len(data) != size:
        raise ValueError("R record: expected %d bytes, got %d" % (size, len(data)))
    return data


def read_character_vectors(base):
    """Returns {variable name: list of str} for every character vector in base.rdx/.rdb."""
    with open(base + ".rdx", "rb") as f:
        raw_index = f.read()
    index_bytes = gzip.decompress(raw_index) if raw_index[:2] == b"\x1f\x8b" else _decompress_record(raw_index)
    index = _Unserializer(index_bytes).top()
    with open(base + ".rdb", "rb") as f:
        rdb = f.read()
    out = {}
    for name, (offset, length) in index["variables"].items():
        value = _Unserializer(_decompress_record(rdb[int(offset):int(offset) + int(length)])).top()
        if isinstance(value, list) and all(isinstance(x, (str, type(None))) for x in value):
            out[name] = [x or "" for x in value]
    return out
