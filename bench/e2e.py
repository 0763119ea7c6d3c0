#!/usr/bin/env python3
"""End-to-end comparison: `pixpress run` against the seed-style peer (bench/peer.py), the whole
pipeline timed as a user times it, for each kind of origin, interleaved round by round.

    python3 bench/e2e.py --images DIR --pixpress BIN --bench BIN [--origins instant,100ms,300ms,threaded]
                         [--counts 100] [--rounds 3] [--peer-python PY]

For every origin (bench/origin.py on loopback) and image count, each round runs pixpress and
the peer once, in alternating order. Reported per tool (medians over rounds): images/s, wall
seconds, CPU seconds (user + system of the process), wall ÷ (CPU ÷ cores) — 1.0 means every
core was busy for the whole run — CPU ms per image, and peak RSS. The engine's own CPU per
image comes from `pixpress-bench` on the same files, for the overhead ratio.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ORIGINS = {
    "instant": [],
    "100ms": ["--delay-ms", "100"],
    "300ms": ["--delay-ms", "300"],
    "threaded": ["--threaded"],
}


def start_origin(images, kind):
    args = [sys.executable, os.path.join(os.path.dirname(__file__), "origin.py"), "--dir", images]
    process = subprocess.Popen(args + ORIGINS[kind], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if not line.startswith("port "):
        process.kill()
        sys.exit("origin did not start: %r" % line)
    return process, int(line.split()[1])


def write_csv(path, port, names, count, per_row=2):
    with open(path, "w") as f:
        f.write("S. No.,Product Name,Input Image Urls\n")
        urls = [
            "http://127.0.0.1:%d/img/%d/%s" % (port, i, names[i % len(names)])
            for i in range(count)
        ]
        for row in range(0, count, per_row):
            chunk = urls[row : row + per_row]
            f.write('%d.,Product %d,"%s"\n' % (row // per_row + 1, row // per_row, ", ".join(chunk)))


def measure(cmd, env=None):
    """(wall s, cpu s, peak RSS MB) of one child process; exits on failure."""
    started = time.monotonic()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    if status != 0:
        sys.exit("%s failed: %s" % (cmd[0], process.stderr.read().decode(errors="replace")))
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def engine_ms_per_image(bench, images, names):
    out = subprocess.run(
        [bench, "--json"] + [os.path.join(images, n) for n in names],
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(out.stdout)
    return report["cpu_ms_per_image"]


def drip(args):
    """One run with a slow-drip URL among good ones: how long it holds the run, and whether every
    good image was done."""
    names = sorted(n for n in os.listdir(args.images) if os.path.isfile(os.path.join(args.images, n)))
    origin, port = start_origin(args.images, "instant")
    work = tempfile.mkdtemp(prefix="pixpress-drip-")
    try:
        csv_path = os.path.join(work, "input.csv")
        write_csv(csv_path, port, names, args.drip)
        with open(csv_path, "a") as f:
            f.write('%d.,Stuck product,"http://127.0.0.1:%d/drip/0/%s"\n' % (args.drip, port, names[0]))
        started = time.monotonic()
        out = subprocess.run(
            [args.pixpress, "run", csv_path, "--out", os.path.join(work, "out"), "--allow-loopback", "--json"],
            capture_output=True,
            text=True,
            env=dict(os.environ, RUST_LOG="error"),
        )
        wall = time.monotonic() - started
        document = json.loads(out.stdout)
        progress = document.get("progress", {})
        print(
            "slow-drip run: %.1f s; status %s; images ok %s, failed %s of %s"
            % (wall, document.get("status"), progress.get("images_ok"), progress.get("images_failed"), progress.get("images_total"))
        )
        for product in document.get("products", []):
            for image in product.get("images", []):
                if image.get("status") == "FAILED":
                    print("  failed: %s %s — %s" % (image.get("input_url"), image.get("error_code"), image.get("error")))
    finally:
        origin.kill()
        origin.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="directory of input photos")
    parser.add_argument("--pixpress", required=True)
    parser.add_argument("--bench", required=True, help="the pixpress-bench binary")
    parser.add_argument("--peer-python", default=sys.executable, help="a Python with Pillow")
    parser.add_argument("--origins", default="instant,100ms,300ms,threaded")
    parser.add_argument("--counts", default="100")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--drip",
        type=int,
        metavar="N",
        help="instead: one `pixpress run` of N good images plus one URL that sends a byte per second",
    )
    args = parser.parse_args()
    if args.drip:
        return drip(args)
    names = sorted(n for n in os.listdir(args.images) if os.path.isfile(os.path.join(args.images, n)))
    cores = os.cpu_count() or 1
    engine_ms = engine_ms_per_image(args.bench, args.images, names)
    print("engine (pixpress-bench, one thread): %.1f CPU ms per image over %d files" % (engine_ms, len(names)))
    env = dict(os.environ, RUST_LOG="error")
    rows = []
    for kind in args.origins.split(","):
        for count in [int(c) for c in args.counts.split(",")]:
            origin, port = start_origin(args.images, kind)
            work = tempfile.mkdtemp(prefix="pixpress-e2e-")
            try:
                csv_path = os.path.join(work, "input.csv")
                write_csv(csv_path, port, names, count)
                runs = {"pixpress": [], "peer": []}
                for round_ in range(args.rounds):
                    order = ["pixpress", "peer"] if round_ % 2 == 0 else ["peer", "pixpress"]
                    for tool in order:
                        out = os.path.join(work, "%s-%d" % (tool, round_))
                        if tool == "pixpress":
                            cmd = [args.pixpress, "run", csv_path, "--out", out, "--allow-loopback", "--json"]
                        else:
                            cmd = [args.peer_python, os.path.join(os.path.dirname(__file__), "peer.py"), csv_path, out]
                        runs[tool].append(measure(cmd, env))
                        shutil.rmtree(out, ignore_errors=True)
                figures = {}
                for tool, samples in runs.items():
                    wall = statistics.median(s[0] for s in samples)
                    cpu = statistics.median(s[1] for s in samples)
                    rss = max(s[2] for s in samples)
                    figures[tool] = {
                        "images_per_s": count / wall,
                        "wall_s": wall,
                        "cpu_s": cpu,
                        "busy_ratio": wall / (cpu / cores),
                        "cpu_ms_per_image": cpu * 1000.0 / count,
                        "peak_rss_mb": rss,
                    }
                rows.append({"origin": kind, "images": count, **figures})
            finally:
                origin.kill()
                origin.wait()
                shutil.rmtree(work, ignore_errors=True)
    print()
    print("| origin | images | pixpress img/s | peer img/s | ratio | pixpress wall s | CPU s | wall ÷ (CPU ÷ %d cores) | CPU ms/image (engine %.1f) | peak RSS MB | peer peak RSS MB |" % (cores, engine_ms))
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, q = r["pixpress"], r["peer"]
        print(
            "| %s | %d | %.1f | %.1f | %.2f× | %.2f | %.2f | %.2f | %.1f (%.2f×) | %.0f | %.0f |"
            % (
                r["origin"], r["images"], p["images_per_s"], q["images_per_s"],
                p["images_per_s"] / q["images_per_s"], p["wall_s"], p["cpu_s"], p["busy_ratio"],
                p["cpu_ms_per_image"], p["cpu_ms_per_image"] / engine_ms, p["peak_rss_mb"], q["peak_rss_mb"],
            )
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"engine_cpu_ms_per_image": engine_ms, "cores": cores, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
