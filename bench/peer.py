#!/usr/bin/env python3
"""The seed-style peer: what a plain script doing pixpress's job looks like.

    python3 bench/peer.py INPUT.csv OUT_DIR [--threads 5] [--quality 50]

Reads the product CSV (S. No., Product Name, Input Image Urls), downloads every image with
urllib in a pool of threads, converts it to RGB with Pillow and saves it as JPEG quality 50,
then writes OUT_DIR/output.csv with the output paths in input order (empty where an image
failed). No retries, no limits: the baseline the end-to-end benchmark compares against.
"""

import argparse
import csv
import io
import os
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from PIL import Image


def process(job):
    index, url, out_dir, quality = job
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            data = response.read()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        path = os.path.join(out_dir, "%06d.jpg" % index)
        image.save(path, "JPEG", quality=quality)
        return path
    except Exception:  # noqa: BLE001 - a failed image leaves its slot empty
        return ""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("csv")
    parser.add_argument("out")
    parser.add_argument("--threads", type=int, default=5)
    parser.add_argument("--quality", type=int, default=50)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(args.csv, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    jobs, shape = [], []
    for row in rows:
        urls = [u.strip() for u in row[2].split(",") if u.strip()]
        shape.append(len(urls))
        for url in urls:
            jobs.append((len(jobs), url, args.out, args.quality))
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        outputs = list(pool.map(process, jobs))
    with open(os.path.join(args.out, "output.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header + ["Output Image Urls"])
        at = 0
        for row, count in zip(rows, shape):
            writer.writerow(row + [", ".join(outputs[at : at + count])])
            at += count


if __name__ == "__main__":
    main()
