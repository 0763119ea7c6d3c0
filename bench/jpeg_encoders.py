#!/usr/bin/env python3
"""Bytes and encode CPU of other JPEG encoders at the SSIMULACRA2 score of pixpress's JPEG q50.

For every image, the source is decoded to RGB as pixpress decodes it (libjpeg-turbo through
Pillow, EXIF orientation applied, alpha flattened onto white; ICC profiles are not converted,
and the product set has none) and encoded by libjpeg-turbo at quality 50, 4:2:0, optimised
Huffman tables: what pixpress stores.
Its SSIMULACRA2 score (the engine's own metric, through `pixpress-ssimulacra2`) is the target.
Each candidate encoder's quality is then searched (bisection over 1-100, which assumes the
score rises with the quality, as it does but for small steps) for the lowest setting whose
output scores at least the target, and its bytes and encode time are recorded:

- jpegli: Google's jpegli (libjxl) with its library defaults, through `pyjpegli`;
- mozjpeg-trellis: mozjpeg 4.0.3 (through `jpeglib`) with libjpeg's own quantisation tables,
  baseline, optimised Huffman tables and trellis quantisation of AC and DC coefficients, so
  only the trellis differs from libjpeg-turbo;
- mozjpeg: mozjpeg 4.0.3's defaults (progressive, optimised scans, trellis, its own tables).

Encode time is the best of three runs at the found quality, against libjpeg-turbo's time
for q50 in the same process (one thread each). `jpeglib` builds its libjpeg variants without
SIMD, so mozjpeg's time is also given against libjpeg-turbo 2.1 from the same build: that
ratio is what trellis quantisation costs by itself. The verdict applies the rule for adopting
an encoder: at least 5 % fewer bytes in total, at most 1.3x the CPU (the kinder of the two
ratios).

    bench/jpeg_encoders.py --list ~/.cache/pixpress-corpus/product100.txt \
        --scorer target/release/pixpress-ssimulacra2 [--limit N] [--json out.json]

Run through scripts/jpeg-encoders.sh, which builds the venv and the scorer first.
"""
import argparse
import io
import itertools
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import jpeglib
import numpy as np
import pyjpegli
from PIL import Image, ImageOps

ADOPT_BYTES = 0.95
ADOPT_CPU = 1.3
SCRATCH = tempfile.mkdtemp(prefix="pixpress-jpeg-study-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def load(path):
    """The RGB pixels pixpress encodes: upright, alpha composited over white."""
    image = ImageOps.exif_transpose(Image.open(path))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def encode_turbo(image, quality):
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, optimize=True, subsampling=2)
    return buf.getvalue()


def encode_jpegli(image, quality):
    return pyjpegli.encode(image.tobytes(), image.width, image.height, quality)


def jpeglib_encoder(version, flags, table):
    """An encoder from `jpeglib`'s bundled libjpeg builds (C without SIMD), writing through
    a scratch file."""

    scratch = os.path.join(SCRATCH, f"{version}-{len(flags)}.jpg")

    def encode(image, quality):
        with jpeglib.version(version):
            jpeg = jpeglib.from_spatial(np.asarray(image))
            jpeg.write_spatial(scratch, qt=quality, base_quant_tbl_idx=table, flags=flags)
        with open(scratch, "rb") as f:
            return f.read()

    return encode


CANDIDATES = {
    "jpegli": encode_jpegli,
    "mozjpeg-trellis": jpeglib_encoder(
        "mozjpeg403",
        ["-PROGRESSIVE_MODE", "-OPTIMIZE_SCANS", "+OPTIMIZE_CODING", "+TRELLIS_QUANT", "+TRELLIS_QUANT_DC"],
        0,
    ),
    "mozjpeg": jpeglib_encoder("mozjpeg403", [], None),
}

# libjpeg-turbo 2.1 from the same `jpeglib` build as mozjpeg (no SIMD either): mozjpeg's CPU is
# also given against it, so the ratio shows what trellis quantisation costs on its own.
SAME_BUILD_TURBO = jpeglib_encoder("turbo210", ["+OPTIMIZE_CODING"], None)


class Scorer:
    """A running `pixpress-ssimulacra2`, fed raw RGB files in a scratch directory."""

    def __init__(self, binary, scratch):
        self.proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.scratch = scratch
        self.reference = None
        self.serial = itertools.count()

    def set_reference(self, image):
        if self.reference:
            os.remove(self.reference)
        self.reference = os.path.join(self.scratch, f"reference-{next(self.serial)}.rgb")
        with open(self.reference, "wb") as f:
            f.write(image.tobytes())
        self.size = image.size

    def score(self, jpeg):
        decoded = Image.open(io.BytesIO(jpeg)).convert("RGB")
        if decoded.size != self.size:
            return None
        path = os.path.join(self.scratch, "distorted.rgb")
        with open(path, "wb") as f:
            f.write(decoded.tobytes())
        self.proc.stdin.write(f"{self.size[0]} {self.size[1]} {self.reference} {path}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        return None if answer == "none" else float(answer)


def best_time(encode, image, quality):
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        encode(image, quality)
        best = min(best, time.process_time() - start)
    return best


def search(encode, image, scorer, target):
    """The lowest quality (1-100) whose score reaches `target`: (quality, bytes, score)."""
    lo, hi, found = 1, 100, None
    while lo <= hi:
        q = (lo + hi) // 2
        data = encode(image, q)
        score = scorer.score(data)
        if score is not None and score >= target:
            found, hi = (q, len(data), score), q - 1
        else:
            lo = q + 1
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", required=True, help="file with one image path per line")
    parser.add_argument("--scorer", required=True, help="path of the pixpress-ssimulacra2 binary")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images")
    parser.add_argument("--json", help="write per-image figures here")
    args = parser.parse_args()
    paths = [line.strip() for line in open(args.list) if line.strip()]
    if args.limit:
        paths = paths[: args.limit]
    scorer = Scorer(args.scorer, SCRATCH)
    rows = []
    for n, path in enumerate(paths, 1):
        image = load(path)
        scorer.set_reference(image)
        megapixels = image.width * image.height / 1e6
        base = encode_turbo(image, 50)
        target = scorer.score(base)
        if target is None:
            continue
        row = {
            "path": path,
            "megapixels": megapixels,
            "target": target,
            "turbo": {"quality": 50, "bytes": len(base), "score": target,
                      "cpu_s": best_time(encode_turbo, image, 50)},
            "same_build_turbo_cpu_s": best_time(SAME_BUILD_TURBO, image, 50),
        }
        for name, encode in CANDIDATES.items():
            found = search(encode, image, scorer, target)
            if found is None:
                row[name] = None
                continue
            quality, size, score = found
            row[name] = {"quality": quality, "bytes": size, "score": score,
                         "cpu_s": best_time(encode, image, quality)}
        rows.append(row)
        print(f"[{n}/{len(paths)}] {os.path.basename(path)}: target {target:.2f}, "
              + ", ".join(f"{k} q{v['quality']} {v['bytes'] / len(base):.3f}x" for k, v in row.items()
                          if k in CANDIDATES and v), flush=True)
    scorer.proc.stdin.close()
    scorer.proc.wait()
    shutil.rmtree(SCRATCH, ignore_errors=True)

    total_mp = sum(r["megapixels"] for r in rows)
    base_bytes = sum(r["turbo"]["bytes"] for r in rows)
    base_cpu = sum(r["turbo"]["cpu_s"] for r in rows)
    print(f"\n== {len(rows)} images, {total_mp:.1f} MP; target: libjpeg-turbo q50 (median score "
          f"{statistics.median(r['target'] for r in rows):.2f}), {base_bytes} bytes, "
          f"{base_cpu * 1000 / total_mp:.1f} ms/MP")
    print(f"{'encoder':16} {'images':>6} {'bytes vs q50':>13} {'median ratio':>13} {'median q':>9} "
          f"{'encode ms/MP':>13} {'CPU vs turbo':>13} {'vs same build':>14}  verdict")
    summary = {}
    for name in CANDIDATES:
        done = [r for r in rows if r[name]]
        if not done:
            continue
        ratio = sum(r[name]["bytes"] for r in done) / sum(r["turbo"]["bytes"] for r in done)
        median_ratio = statistics.median(r[name]["bytes"] / r["turbo"]["bytes"] for r in done)
        cpu = sum(r[name]["cpu_s"] for r in done) / sum(r["turbo"]["cpu_s"] for r in done)
        ms_per_mp = sum(r[name]["cpu_s"] for r in done) * 1000 / sum(r["megapixels"] for r in done)
        same_build = None
        if name.startswith("mozjpeg"):
            same_build = sum(r[name]["cpu_s"] for r in done) / sum(r["same_build_turbo_cpu_s"] for r in done)
        adopt = ratio <= ADOPT_BYTES and min(cpu, same_build or cpu) <= ADOPT_CPU and len(done) == len(rows)
        summary[name] = {"images": len(done), "bytes_ratio": ratio, "median_ratio": median_ratio,
                         "median_quality": statistics.median(r[name]["quality"] for r in done),
                         "ms_per_mp": ms_per_mp, "cpu_ratio": cpu, "cpu_ratio_same_build": same_build,
                         "adopt": adopt}
        same_text = f"{same_build:14.2f}" if same_build is not None else f"{'-':>14}"
        print(f"{name:16} {len(done):6d} {ratio:13.3f} {median_ratio:13.3f} "
              f"{summary[name]['median_quality']:9.1f} {ms_per_mp:13.1f} {cpu:13.2f} {same_text}  "
              f"{'adopt' if adopt else 'keep libjpeg-turbo'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "images": rows}, f, indent=1)


if __name__ == "__main__":
    main()
