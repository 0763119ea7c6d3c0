"""Every output format opens in Pillow — libjpeg-turbo, libwebp and libavif (dav1d), decoders
independent of the engine — as the format it claims, at the size the engine reports.

    python scripts/check_decoders.py --bench target/debug/pixpress-bench cli/assets/demo/*.jpg
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

from PIL import Image, features


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
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"{checked} outputs decoded with Pillow, {len(failures)} problems")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
