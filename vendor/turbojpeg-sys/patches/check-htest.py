#!/usr/bin/env python3
"""Checks that the patched htest_one_block() (libjpeg-turbo/src/jchuff.c) counts exactly the
Huffman symbols the original (htest_one_block_original.c) counts, on 2 million random 8x8
blocks of every density (empty, one coefficient at the end, runs over 15, out-of-order DC),
through the SIMD path the compiler targets (SSE2 on x86-64, NEON on AArch64) and through the
plain C path. Needs a C compiler (`cc`, or $CC).

    python3 vendor/turbojpeg-sys/patches/check-htest.py
"""
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE.parent / "libjpeg-turbo" / "src"

PRELUDE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#define DCTSIZE 8
#define DCTSIZE2 64
#define LOCAL(type) static type
typedef short JCOEF;
typedef JCOEF *JCOEFPTR;
typedef struct { int data_precision; } compress_struct;
typedef compress_struct *j_compress_ptr;
#define ERREXIT(cinfo, code) do { errors++; return; } while (0)
static long errors;
static const int jpeg_natural_order[DCTSIZE2 + 16] = {
  0,  1,  8, 16,  9,  2,  3, 10, 17, 24, 32, 25, 18, 11,  4,  5,
 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13,  6,  7, 14, 21, 28,
 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63 };
static unsigned char jpeg_nbits_table[65536];
#define JPEG_NBITS(x) (jpeg_nbits_table[x])
#define JPEG_NBITS_NONZERO(x) JPEG_NBITS(x)
"""

MAIN = r"""
static uint64_t state = 88172645463325252ULL;
static unsigned next(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return (unsigned)state; }
int main(void) {
  for (int i = 0; i < 65536; i++) { int n = 0, t = i; while (t) { n++; t >>= 1; } jpeg_nbits_table[i] = n; }
  compress_struct cinfo = { 8 };
  static long dc[2][17], ac[2][257];
  long errs[2] = { 0, 0 };
  JCOEF block[64];
  for (long it = 0; it < 2000000; it++) {
    int density = next() % 65;
    for (int k = 0; k < 64; k++)
      block[k] = (JCOEF)((int)(next() % 64) < density ? (int)(next() % 2047) - 1023 : 0);
    if (it % 7 == 0) memset(block + 1, 0, 63 * sizeof(JCOEF));
    if (it % 11 == 0) { memset(block, 0, 63 * sizeof(JCOEF)); block[63] = 5; }
    if (it % 13 == 0) { memset(block + 1, 0, 63 * sizeof(JCOEF)); block[jpeg_natural_order[40]] = -1; }
    if (it % 1009 == 0) block[next() % 64] = 4096;  /* out of range for 8-bit data */
    int last_dc = (int)(next() % 2047) - 1023;
    errors = 0; htest_original(&cinfo, block, last_dc, dc[0], ac[0]); errs[0] += errors;
    errors = 0; htest_one_block(&cinfo, block, last_dc, dc[1], ac[1]); errs[1] += errors;
    if (errs[0] != errs[1]) { printf("out-of-range checks differ at block %ld\n", it); return 1; }
  }
  if (memcmp(dc[0], dc[1], sizeof dc[0]) || memcmp(ac[0], ac[1], sizeof ac[0])) {
    puts("the symbol counts differ");
    return 1;
  }
  printf("same counts on 2000000 blocks (%ld out of range)\n", errs[0]);
  return 0;
}
"""


def function(text, start, end):
    i = text.index(start)
    return text[i : text.index(end, i)]


def main():
    patched = function((SRC / "jchuff.c").read_text(), "LOCAL(void)\nhtest_one_block", "/*\n * Trial-encode")
    original = function(
        (HERE / "htest_one_block_original.c").read_text(), "LOCAL(void)\nhtest_one_block", "\n}\n"
    ) + "\n}\n"
    original = original.replace("htest_one_block(", "htest_original(", 1)
    headers = f'#include "{SRC / "jchuff-zigzag.h"}"\n'
    headers += "#if defined(__SSE2__)\n#include <emmintrin.h>\n#elif defined(__aarch64__)\n#include <arm_neon.h>\n#endif\n"
    plain = patched.replace("#if defined(__SSE2__)", "#if 0", 1).replace(
        "#elif defined(__aarch64__) || defined(_M_ARM64)", "#elif 0", 1
    )
    cc = os.environ.get("CC", "cc")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, body in (("SIMD", patched), ("plain C", plain)):
            source = pathlib.Path(tmp) / "check.c"
            source.write_text(PRELUDE + headers + original + body + MAIN)
            binary = pathlib.Path(tmp) / "check"
            subprocess.run([cc, "-O2", "-o", str(binary), str(source)], check=True)
            result = subprocess.run([str(binary)], capture_output=True, text=True)
            print(f"htest_one_block, {name} path: {result.stdout.strip()}")
            failed |= result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
