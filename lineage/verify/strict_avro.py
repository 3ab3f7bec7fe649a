"""A strict Avro body decoder compiled from a schema: the verifier's fast way to read event bytes.

``codec.Schema.decode_body`` decodes with fastavro and re-encodes to prove the bytes are the one
canonical spelling. This decoder reads the canonical spelling only, in one pass of straight-line
Python generated from the schema: minimal varints, union indexes 0..n-1 as one byte, arrays and
maps as one block, no duplicate map keys, strict UTF-8, the last byte consumed. It refuses more
than ``decode_body`` may (any value it is unsure of raises ``StrictDecodeError``), never less,
and gives the same record; the caller then asks ``decode_body`` for the verdict and its words.
Schemas with types it does not compile (bytes, fixed, float, boolean, named references) give None.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from lineage import codec

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

Decoder = Callable[[bytes, int], dict[str, Any]]
"""Decodes the body that starts at the offset and ends at the end of the bytes."""


class StrictDecodeError(ValueError):
    """The bytes are not what the strict decoder accepts (they may still decode elsewhere)."""


class _Unsupported(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint of at most 10 bytes in its shortest spelling: (value, next position)."""
    shift = 0
    acc = 0
    start = pos
    while True:
        b = buf[pos]
        pos += 1
        acc |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if pos - start >= 10:
            raise StrictDecodeError("varint longer than 10 bytes")
    if b == 0 and pos - start > 1:
        raise StrictDecodeError("varint not in its shortest spelling")
    if acc >= 1 << 64:
        raise StrictDecodeError("varint beyond 64 bits")
    return (acc >> 1) ^ -(acc & 1), pos


class _Gen:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.n = 0

    def var(self, stem: str) -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def long(self, ind: int, target: str, lo: int, hi: int) -> None:
        self.emit(ind, "b = buf[pos]")
        self.emit(ind, "if b < 0x80:")
        self.emit(ind + 1, f"{target} = (b >> 1) ^ -(b & 1)")
        self.emit(ind + 1, "pos += 1")
        self.emit(ind, "else:")
        self.emit(ind + 1, f"{target}, pos = varint(buf, pos)")
        self.emit(ind + 1, f"if not {lo} <= {target} <= {hi}:")
        self.emit(ind + 2, "raise Bad('number out of range')")

    def count(self, ind: int, target: str) -> None:
        """A length or block count: non-negative."""
        self.long(ind, target, 0, LONG_MAX)
        self.emit(ind, f"if {target} < 0:")
        self.emit(ind + 1, "raise Bad('negative length or count')")

    def string(self, ind: int, target: str) -> None:
        """Length, then UTF-8: sliced from the body's text when the body is all ASCII."""
        n = self.var("n")
        self.emit(ind, "b = buf[pos]")
        self.emit(ind, "if b < 0x80 and not b & 1:")
        self.emit(ind + 1, "pos += 1")
        self.emit(ind + 1, "end = pos + (b >> 1)")
        self.emit(ind, "else:")
        self.emit(ind + 1, f"{n}, pos = varint(buf, pos)")
        self.emit(ind + 1, f"if {n} < 0:")
        self.emit(ind + 2, "raise Bad('negative length')")
        self.emit(ind + 1, f"end = pos + {n}")
        # An end past the body is caught later: every read after it is out of range, and the
        # position must end exactly at the body's size.
        self.emit(ind, f"{target} = @STRING@")
        self.emit(ind, "pos = end")

    def value(self, ind: int, schema: Any, target: str) -> None:
        if schema == "string":
            self.string(ind, target)
        elif schema == "long":
            self.long(ind, target, LONG_MIN, LONG_MAX)
        elif schema == "int":
            self.long(ind, target, INT_MIN, INT_MAX)
        elif schema == "null":
            self.emit(ind, f"{target} = None")
        elif isinstance(schema, list):
            self.union(ind, schema, target)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind == "record":
                self.record(ind, schema, target)
            elif kind == "enum":
                symbols = tuple(schema["symbols"])
                name = self.var("symbols")
                self.consts[name] = symbols
                i = self.var("i")
                self.long(ind, i, 0, len(symbols) - 1)
                self.emit(ind, f"if not 0 <= {i} < {len(symbols)}:")
                self.emit(ind + 1, "raise Bad('enum index out of range')")
                self.emit(ind, f"{target} = {name}[{i}]")
            elif kind == "array":
                self.block(ind, schema["items"], target, is_map=False)
            elif kind == "map":
                self.block(ind, schema["values"], target, is_map=True)
            elif kind in ("string", "long", "int"):
                self.value(ind, kind, target)
            else:
                raise _Unsupported(kind)
        else:
            raise _Unsupported(schema)

    def union(self, ind: int, branches: list[Any], target: str) -> None:
        if not 1 <= len(branches) <= 63:
            raise _Unsupported("union size")
        self.emit(ind, "b = buf[pos]")
        self.emit(ind, "pos += 1")
        for k, branch in enumerate(branches):
            self.emit(ind, f"{'if' if k == 0 else 'elif'} b == {2 * k}:")
            self.value(ind + 1, branch, target)
        self.emit(ind, "else:")
        self.emit(ind + 1, "raise Bad('union index not in its shortest spelling or out of range')")

    def block(self, ind: int, item: Any, target: str, *, is_map: bool) -> None:
        """Arrays and maps as fastavro writes them: one block of count items, then 0."""
        n, k, v = self.var("n"), self.var("k"), self.var("v")
        self.emit(ind, f"{target} = {{}}" if is_map else f"{target} = []")
        self.count(ind, n)
        self.emit(ind, f"if {n} > size:")  # every item takes at least one byte
        self.emit(ind + 1, "raise Bad('more items than bytes')")
        self.emit(ind, f"if {n}:")
        self.emit(ind + 1, f"for _ in range({n}):")
        if is_map:
            self.string(ind + 2, k)
        self.value(ind + 2, item, v)
        self.emit(ind + 2, f"{target}[{k}] = {v}" if is_map else f"{target}.append({v})")
        if is_map:
            self.emit(ind + 1, f"if len({target}) != {n}:")
            self.emit(ind + 2, "raise Bad('duplicate map key')")
        self.emit(ind + 1, "if buf[pos] != 0:")
        self.emit(ind + 2, "raise Bad('array or map in more than one block')")
        self.emit(ind + 1, "pos += 1")

    def record(self, ind: int, schema: dict[str, Any], target: str) -> None:
        names = []
        for f in schema["fields"]:
            var = self.var("f")
            self.value(ind, f["type"], var)
            names.append((f["name"], var))
        self.emit(ind, f"{target} = {{" + ", ".join(f"{n!r}: {v}" for n, v in names) + "}")


def compile_decoder(schema: Any) -> Decoder | None:
    """A strict decoder of ``schema`` (fastavro's parsed form), or None if it cannot compile it."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    gen = _Gen()
    try:
        gen.record(2, schema, "out")
    except _Unsupported:
        return None
    body = [
        "    size = len(buf)",
        "    pos = 0",
        "    try:",
        *gen.lines,
        "    except IndexError:",
        "        raise Bad('body ends early') from None",
        "    except UnicodeDecodeError:",
        "        raise Bad('string is not UTF-8') from None",
        "    if pos != size:",
        "        raise Bad('bytes after the record')",
        "    return out",
    ]
    # Two variants: all-ASCII bodies slice their strings from one decoded text.
    source = "\n".join(
        [
            "def ascii_body(buf, txt):",
            *(line.replace("@STRING@", "txt[pos:end]") for line in body),
            "def utf8_body(buf):",
            *(line.replace("@STRING@", "buf[pos:end].decode('utf-8')") for line in body),
            "def decode(buf, pos):",
            "    if pos:",
            "        buf = buf[pos:]",
            "    if buf.isascii():",
            "        return ascii_body(buf, buf.decode('ascii'))",
            "    return utf8_body(buf)",
        ]
    )
    namespace: dict[str, Any] = {"varint": _varint, "Bad": StrictDecodeError, **gen.consts}
    exec(
        compile(source, f"<strict decoder of {schema.get('name')}>", "exec"), namespace
    )  # source generated above
    decoder: Decoder = namespace["decode"]
    return decoder


@cache
def decoder_for(name: str) -> Decoder | None:
    """The strict decoder of ``schemas/<name>.avsc`` (cached), None when it cannot compile."""
    return compile_decoder(codec.load(name).parsed)
