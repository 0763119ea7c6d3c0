"""Every output format opens in Pillow — libjpeg-turbo, libwebp and libavif (dav1d), decoders
independent of the engine — as the format it claims, at the size the engine reports. And the
engine's JPEGs are byte for byte what Pillow's (unpatched) libjpeg-turbo writes from the same
pixels at quality 50, 4:2:0, optimised Huffman tables: the engine's libjpeg-turbo gathers the
Huffman statistics differently (vendor/turbojpeg-sys/PATCHES.md) and must not change a byte.

    python scripts/check_decoders.py --bench target/debug/pixpress-bench cli/assets/demo/*.jpg
"""

import argparse
import io
import json
import pathlib
import subprocess
import sys
import tempfile

from PIL import Image, features


def same_bytes_as_libjpeg_turbo(report, out):
    """Differences between the engine's JPEGs and Pillow's encoding of the same decoded pixels,
    for the JPEG inputs the engine re-encodes as they are (no rotation, no ICC profile, not CMYK,
    not kept as they came). Returns (problems, images compared)."""
    problems, compared = [], 0
    for image in report["per_image"]:
        source = pathlib.Path(image["path"])
        with Image.open(source) as decoded:
            if decoded.format != "JPEG" or decoded.mode == "CMYK" or image["kept_original"]:
                continue
            if decoded.info.get("icc_profile") or decoded.getexif().get(0x0112, 1) != 1:
                continue
            rgb = decoded.convert("RGB")
        rgb.info = {}
        expected = io.BytesIO()
        rgb.save(expected, "JPEG", quality=50, optimize=True, subsampling=2)
        ours = (out / f"{source.stem}.jpg").read_bytes()
        compared += 1
        if ours != expected.getvalue():
            problems.append(
                f"{source.name}: the engine's JPEG ({len(ours)} bytes) differs from libjpeg-turbo's "
                f"({len(expected.getvalue())} bytes)"
            )
    return problems, compared


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", required=True, help="the pixpress-bench binary")
    parser.add_argument("images", nargs="+", help="input image files")
    args = parser.parse_args()
    for codec in ("jpg", "webp", "avif"):
        if not features.check(codec):
            print(f"Pillow lacks {codec} support", file=sys.stderr)
            return 1
    failures = []
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, ext, mime in (("jpeg", "jpg", "JPEG"), ("webp", "webp", "WEBP"), ("avif", "avif", "AVIF")):
            out = pathlib.Path(tmp) / fmt
            report = json.loads(
                subprocess.run(
                    [args.bench, "--format", fmt, "--out", str(out), "--json", *args.images],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            if report["failed"]:
                failures.append(f"{fmt}: {report['failed']} images failed: {report['errors']}")
            for image in report["per_image"]:
                path = out / f"{pathlib.Path(image['path']).stem}.{ext}"
                try:
                    with Image.open(path) as decoded:
                        decoded.load()
                        if decoded.format != mime:
                            failures.append(f"{path.name}: Pillow reads it as {decoded.format}")
                        pixels = decoded.width * decoded.height
                        if pixels != image["pixels"]:
                            failures.append(f"{path.name}: {pixels} pixels, the engine says {image['pixels']}")
                except Exception as error:  # noqa: BLE001 - any decoder failure is the finding
                    failures.append(f"{path.name}: Pillow cannot decode it: {error}")
                checked += 1
            print(f"{fmt}: {len(report['per_image'])} outputs, median SSIMULACRA2 {report['score_median']:.2f}")
            if fmt == "jpeg":
                same, compared = same_bytes_as_libjpeg_turbo(report, out)
                failures.extend(same)
                if compared == 0:
                    failures.append("no JPEG input could be compared byte for byte with libjpeg-turbo")
                print(f"jpeg: {compared} outputs compared byte for byte with Pillow's libjpeg-turbo")
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"{checked} outputs decoded with Pillow, {len(failures)} problems")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
