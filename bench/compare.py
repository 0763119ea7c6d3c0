#!/usr/bin/env python3
"""Interleaved comparison of Pillow, libvips and pixpress on the same images.

Each tool runs in its own process over an image list ("decode -> RGB -> JPEG quality 50", one
thread each, so figures are per core), in rotating order for every round; the script prints
medians, ratios against Pillow and libvips, bytes, peak RSS and SSIM against the source.

    bench/compare.py --base ~/.cache/pixpress-corpus --bench target/release/pixpress-bench

Run through scripts/bench.sh, which builds the corpus, the venv and the bench binary first.
"""
import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

TOOLS = ["pillow", "vips", "pixpress"]


def worker(tool, list_file, out_dir):
    """Runs one tool over the list in this process and prints a JSON report."""
    paths = [line.strip() for line in open(list_file) if line.strip()]
    if tool == "pillow":
        from PIL import Image

        def run(path):
            image = Image.open(path).convert("RGB")
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=50)
            return buf.getvalue()
    else:
        import pyvips

        def run(path):
            image = pyvips.Image.new_from_file(path, access="sequential")
            if image.hasalpha():
                image = image[: image.bands - 1]
            if image.interpretation not in ("srgb", "b-w"):
                image = image.colourspace("srgb")
            return image.jpegsave_buffer(Q=50)

    outputs, failed, bytes_in = [], 0, 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for path in paths:
        try:
            outputs.append((path, run(path)))
            bytes_in += os.path.getsize(path)
        except Exception:  # noqa: BLE001 - a tool refusing an image is counted, not fatal
            failed += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        for path, data in outputs:
            stem = os.path.splitext(os.path.basename(path))[0]
            with open(os.path.join(out_dir, stem + ".jpg"), "wb") as f:
                f.write(data)
    print(json.dumps({
        "tool": tool, "images": len(paths), "failed": failed, "wall_s": wall, "cpu_s": cpu,
        "bytes_in": bytes_in, "bytes_out": sum(len(d) for _, d in outputs),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


def run_tool(tool, list_file, out_dir, bench):
    env = dict(os.environ, VIPS_CONCURRENCY="1", OMP_NUM_THREADS="1")
    if tool == "pixpress":
        # The engine as Pillow and libvips run: decode → JPEG q50, without the SSIMULACRA2 pass.
        cmd = [bench, "--list", list_file, "--json", "--no-score"] + (["--out", out_dir] if out_dir else [])
    else:
        cmd = [sys.executable, __file__, "--worker", tool, "--list", list_file] + (["--out", out_dir] if out_dir else [])
    result = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def ssim_scores(paths, out_dirs, sample):
    """Mean luminance SSIM of each tool's output against the source, on up to `sample` images."""
    import numpy as np
    from PIL import Image
    from skimage.metrics import structural_similarity

    step = max(1, len(paths) // sample)
    chosen = paths[::step][:sample]
    scores = {tool: [] for tool in out_dirs}
    for path in chosen:
        source = Image.open(path)
        if source.mode in ("RGBA", "LA", "P", "PA") or "transparency" in source.info:
            continue  # tools treat transparency differently by design; compare opaque images
        reference = np.asarray(source.convert("L"), dtype=np.float64)
        stem = os.path.splitext(os.path.basename(path))[0]
        for tool, out_dir in out_dirs.items():
            out = os.path.join(out_dir, stem + ".jpg")
            if not os.path.exists(out):
                continue
            candidate = np.asarray(Image.open(out).convert("L"), dtype=np.float64)
            if candidate.shape != reference.shape:
                continue
            scores[tool].append(structural_similarity(reference, candidate, data_range=255))
    return {tool: (statistics.mean(v) if v else float("nan"), len(v)) for tool, v in scores.items()}


def compare(args):
    bench = os.path.abspath(args.bench)
    tmp = tempfile.mkdtemp(prefix="pixpress-compare-")
    verdicts = []
    for name in args.sets:
        list_file = os.path.join(args.base, name + ".txt")
        paths = [line.strip() for line in open(list_file) if line.strip()]
        runs = {tool: [] for tool in TOOLS}
        out_dirs = {tool: os.path.join(tmp, name, tool) for tool in TOOLS}
        for r in range(args.rounds):
            order = TOOLS[r % 3:] + TOOLS[: r % 3]
            for tool in order:
                runs[tool].append(run_tool(tool, list_file, out_dirs[tool] if r == 0 else None, bench))
        med = {t: {k: statistics.median(run[k] for run in runs[t]) for k in ("wall_s", "cpu_s")} for t in TOOLS}
        last = {t: runs[t][-1] for t in TOOLS}
        rss = {t: max(run["peak_rss_bytes"] for run in runs[t]) for t in TOOLS}
        ssim = ssim_scores(paths, out_dirs, args.ssim_sample)
        n = len(paths)
        print(f"\n== {name}: {n} images, {args.rounds} interleaved rounds, medians, 1 thread per tool")
        print(f"{'tool':10} {'images/s':>9} {'CPU ms/img':>11} {'time vs Pillow':>15} {'bytes out':>12} {'bytes vs Pillow':>16} {'peak RSS MB':>12} {'RSS vs Pillow':>14} {'SSIM':>8} {'failed':>7}")
        for t in TOOLS:
            print(f"{t:10} {n / med[t]['wall_s']:9.1f} {med[t]['cpu_s'] * 1000 / n:11.1f} "
                  f"{med[t]['wall_s'] / med['pillow']['wall_s']:15.3f} {last[t]['bytes_out']:12d} "
                  f"{last[t]['bytes_out'] / last['pillow']['bytes_out']:16.3f} {rss[t] / 1e6:12.1f} "
                  f"{rss[t] / rss['pillow']:14.3f} {ssim[t][0]:8.4f} {last[t]['failed']:7d}")
        speed_pillow = med["pillow"]["wall_s"] / med["pixpress"]["wall_s"]
        speed_vips = med["vips"]["wall_s"] / med["pixpress"]["wall_s"]
        bytes_ratio = last["pixpress"]["bytes_out"] / last["pillow"]["bytes_out"]
        print(f"pixpress: {speed_pillow:.2f}x Pillow's images/s, {speed_vips:.2f}x libvips'; bytes {bytes_ratio:.3f}x Pillow's; "
              f"SSIM {ssim['pixpress'][0]:.4f} vs Pillow {ssim['pillow'][0]:.4f} on {ssim['pixpress'][1]} images")
        if name == "product100":
            verdicts.append(("product100: >= 1.6x Pillow images/s", speed_pillow >= 1.6, f"{speed_pillow:.2f}x"))
            verdicts.append(("product100: >= 1.2x libvips images/s", speed_vips >= 1.2, f"{speed_vips:.2f}x"))
        if name == "corpus":
            time_ratio = med["pixpress"]["wall_s"] / med["pillow"]["wall_s"]
            verdicts.append(("corpus: time <= 0.8x Pillow", time_ratio <= 0.8, f"{time_ratio:.2f}x"))
            rss_ratio = rss["pixpress"] / rss["pillow"]
            verdicts.append(("corpus: peak RSS <= 0.6x Pillow", rss_ratio <= 0.6, f"{rss_ratio:.2f}x"))
        verdicts.append((f"{name}: bytes <= 0.92x Pillow", bytes_ratio <= 0.92, f"{bytes_ratio:.3f}x"))
    print("\n== targets")
    for label, ok, value in verdicts:
        print(f"{'met   ' if ok else 'missed'} {label}: {value}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=["pillow", "vips"], help=argparse.SUPPRESS)
    parser.add_argument("--list", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--base", default=os.path.expanduser("~/.cache/pixpress-corpus"))
    parser.add_argument("--bench", default="target/release/pixpress-bench")
    parser.add_argument("--sets", nargs="+", default=["product100", "corpus"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ssim-sample", type=int, default=30)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.list, args.out)
    else:
        compare(args)


if __name__ == "__main__":
    main()
