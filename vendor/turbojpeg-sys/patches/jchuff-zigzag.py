#!/usr/bin/env python3
"""Writes libjpeg-turbo/src/jchuff-zigzag.h: for each row r of an 8x8 block (natural order) and
each set m of its columns, the 64-bit mask of those coefficients in zigzag order. Derived from
jpeg_natural_order (libjpeg-turbo/src/jutils.c), which this script reads and checks.

    python3 vendor/turbojpeg-sys/patches/jchuff-zigzag.py
"""
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent / "libjpeg-turbo" / "src"
source = (root / "jutils.c").read_text()
table = source[source.index("const int jpeg_natural_order[DCTSIZE2 + 16] = {"):]
natural = [int(n) for n in re.findall(r"\d+", table[: table.index("};")])][2:66]
assert sorted(natural) == list(range(64)), "jpeg_natural_order is not a permutation of 0..63"
zigzag_of = {n: k for k, n in enumerate(natural)}

lines = [
    "/*",
    " * jchuff-zigzag.h",
    " *",
    " * zigzag_bits[r][m] is the 64-bit mask, in zigzag order (bit k for the k'th",
    " * coefficient of jpeg_natural_order), of the coefficients of row r (natural",
    " * order) whose columns are set in m (bit c for column c).  Generated from",
    " * jpeg_natural_order by patches/jchuff-zigzag.py; used by htest_one_block()",
    " * in jchuff.c.",
    " */",
    "",
    "static const unsigned long long zigzag_bits[DCTSIZE][256] = {",
]
for r in range(8):
    values = []
    for m in range(256):
        bits = sum(1 << zigzag_of[r * 8 + c] for c in range(8) if m >> c & 1)
        values.append(f"0x{bits:016x}ULL")
    lines.append("  {")
    lines.extend("    " + ", ".join(values[i : i + 3]) + "," for i in range(0, 256, 3))
    lines.append("  },")
lines.append("};")
(root / "jchuff-zigzag.h").write_text("\n".join(lines) + "\n")
