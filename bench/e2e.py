#!/usr/bin/env python3
"""End-to-end comparison: `pixpress run` against the seed-style peer (bench/peer.py), the whole
pipeline timed as a user times it, for each kind of origin, interleaved round by round.

    python3 bench/e2e.py --images DIR --pixpress BIN --bench BIN [--origins instant,100ms,…]
                         [--counts 100] [--rounds 3] [--peer-python PY] [--small] [--no-score]

Origins (bench/origin.py on loopback): instant; 100ms and 300ms before every answer; hitmiss100
and hitmiss40 (every other answer after 100 / 40 ms, the rest at once); lognormal (median 50 ms,
p99 1 s); threaded10 and threaded11 (Python's threaded http.server, HTTP/1.0 or HTTP/1.1
keep-alive); ratelimit8 (100 ms before every answer, and 429 with Retry-After: 1 beyond 8 requests in
flight); drip (one URL
that sends a byte per second for 30 s among the good ones); reset10 (one connection in ten
reset).

For every origin and image count, each round runs pixpress and the peer once, in alternating
order. Reported per tool (medians over rounds): images/s, wall seconds, CPU seconds (user +
system of the process), wall ÷ (CPU ÷ cores) — 1.0 means every core was busy for the whole run
— CPU ms per image (and its ratio to the engine's own, from `pixpress-bench` on the same
files), peak RSS, the most requests the origin saw in flight at once, and failed images.
With --small, every row holds one small JPEG (a 160 px thumbnail of the first photo), as in a
catalogue of thumbnails. pixpress scores every image (SSIMULACRA2) as it does by default; with
--no-score it does the peer's work only (`pixpress run --no-score`).
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ORIGINS = {
    "instant": [],
    "100ms": ["--delay-ms", "100"],
    "300ms": ["--delay-ms", "300"],
    "hitmiss100": ["--hit-miss-ms", "100"],
    "hitmiss40": ["--hit-miss-ms", "40"],
    "lognormal": ["--lognormal-ms", "50,1000"],
    "threaded10": ["--threaded", "--http10"],
    "threaded11": ["--threaded"],
    "ratelimit8": ["--rate-limit", "8", "--delay-ms", "100"],
    "drip": [],
    "reset10": ["--reset-every", "10"],
}

DESCRIBED = {
    "instant": "instant",
    "100ms": "100 ms before every answer",
    "300ms": "300 ms before every answer",
    "hitmiss100": "every other answer after 100 ms (hit/miss)",
    "hitmiss40": "every other answer after 40 ms (hit/miss)",
    "lognormal": "log-normal latency, median 50 ms, p99 1 s",
    "threaded10": "Python's threaded `http.server`, HTTP/1.0",
    "threaded11": "Python's threaded `http.server`, HTTP/1.1 keep-alive",
    "ratelimit8": "100 ms, and 429 (`Retry-After: 1`) beyond 8 in flight",
    "drip": "one URL dripping a byte per second for 30 s among the good ones",
    "reset10": "one connection in ten reset",
}


def start_origin(images, kind):
    args = [sys.executable, os.path.join(os.path.dirname(__file__), "origin.py"), "--dir", images]
    process = subprocess.Popen(args + ORIGINS[kind], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if not line.startswith("port "):
        process.kill()
        sys.exit("origin did not start: %r" % line)
    return process, int(line.split()[1])


def origin_stats(port, reset):
    url = "http://127.0.0.1:%d/stats%s" % (port, "?reset=1" if reset else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def write_csv(path, port, names, count, per_row=2, drip=False):
    """The input CSV; returns the number of images in it."""
    with open(path, "w") as f:
        f.write("S. No.,Product Name,Input Image Urls\n")
        urls = [
            "http://127.0.0.1:%d/img/%d/%s" % (port, i, names[i % len(names)])
            for i in range(count)
        ]
        rows = 0
        for row in range(0, count, per_row):
            chunk = urls[row : row + per_row]
            rows += 1
            f.write('%d.,Product %d,"%s"\n' % (rows, rows, ", ".join(chunk)))
        if drip:
            f.write('%d.,Stuck product,"http://127.0.0.1:%d/drip/0/%s"\n' % (rows + 1, port, names[0]))
            return count + 1
    return count


def measure(cmd, env=None):
    """(wall s, cpu s, peak RSS MB, stdout) of one child process; exits on failure."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
        if status != 0:
            sys.exit("%s failed: %s" % (cmd[0], process.stderr.read().decode(errors="replace")))
        out.seek(0)
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, out.read()


def pixpress_failures(stdout):
    document = json.loads(stdout)
    return int(document.get("progress", {}).get("images_failed", 0))


def peer_failures(out_dir):
    failed = 0
    with open(os.path.join(out_dir, "output.csv"), newline="") as f:
        rows = list(csv.reader(f))[1:]
    for row in rows:
        inputs = [u for u in row[2].split(",") if u.strip()]
        outputs = row[3].split(", ") if inputs else []
        failed += sum(1 for o in outputs if not o.strip())
    return failed


def engine_ms_per_image(bench, images, names, score):
    out = subprocess.run(
        [bench, "--json"] + ([] if score else ["--no-score"]) + [os.path.join(images, n) for n in names],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)["cpu_ms_per_image"]


def small_images(images, names, peer_python):
    """A directory holding one 160 px JPEG thumbnail of the first photo."""
    directory = tempfile.mkdtemp(prefix="pixpress-small-")
    script = (
        "import sys\nfrom PIL import Image\n"
        "im = Image.open(sys.argv[1]).convert('RGB')\nim.thumbnail((160, 160))\n"
        "im.save(sys.argv[2], 'JPEG', quality=85)\n"
    )
    subprocess.run(
        [peer_python, "-c", script, os.path.join(images, names[0]), os.path.join(directory, "small.jpg")],
        check=True,
    )
    return directory


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="directory of input photos")
    parser.add_argument("--pixpress", required=True)
    parser.add_argument("--bench", required=True, help="the pixpress-bench binary")
    parser.add_argument("--peer-python", default=sys.executable, help="a Python with Pillow")
    parser.add_argument("--origins", default="instant,100ms,300ms,threaded11")
    parser.add_argument("--counts", default="100")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="one small JPEG per row")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--no-score",
        action="store_true",
        help="run pixpress with --no-score: no SSIMULACRA2 pass, the same work as the peer",
    )
    args = parser.parse_args()
    images = args.images
    names = sorted(n for n in os.listdir(images) if os.path.isfile(os.path.join(images, n)))
    per_row = 2
    if args.small:
        images = small_images(images, names, args.peer_python)
        names = ["small.jpg"]
        per_row = 1
    cores = os.cpu_count() or 1
    engine_ms = engine_ms_per_image(args.bench, images, names, not args.no_score)
    print(
        "engine (pixpress-bench, one thread, %s): %.1f CPU ms per image over %d files"
        % ("unscored" if args.no_score else "scored", engine_ms, len(names))
    )
    env = dict(os.environ, RUST_LOG="error")
    rows = []
    for kind in args.origins.split(","):
        for count in [int(c) for c in args.counts.split(",")]:
            origin, port = start_origin(images, kind)
            work = tempfile.mkdtemp(prefix="pixpress-e2e-")
            try:
                csv_path = os.path.join(work, "input.csv")
                total = write_csv(csv_path, port, names, count, per_row, drip=kind == "drip")
                runs = {"pixpress": [], "peer": []}
                for round_ in range(args.rounds):
                    order = ["pixpress", "peer"] if round_ % 2 == 0 else ["peer", "pixpress"]
                    for tool in order:
                        out = os.path.join(work, "%s-%d" % (tool, round_))
                        if tool == "pixpress":
                            cmd = [args.pixpress, "run", csv_path, "--out", out, "--allow-loopback", "--json"]
                            if args.no_score:
                                cmd.append("--no-score")
                        else:
                            cmd = [args.peer_python, os.path.join(os.path.dirname(__file__), "peer.py"), csv_path, out]
                        origin_stats(port, reset=True)
                        wall, cpu, rss, stdout = measure(cmd, env)
                        peak = origin_stats(port, reset=True)["peak"]
                        failed = pixpress_failures(stdout) if tool == "pixpress" else peer_failures(out)
                        runs[tool].append((wall, cpu, rss, peak, failed))
                        shutil.rmtree(out, ignore_errors=True)
                figures = {}
                for tool, samples in runs.items():
                    wall = statistics.median(s[0] for s in samples)
                    cpu = statistics.median(s[1] for s in samples)
                    figures[tool] = {
                        "images_per_s": total / wall,
                        "wall_s": wall,
                        "cpu_s": cpu,
                        "busy_ratio": wall / (cpu / cores),
                        "cpu_ms_per_image": cpu * 1000.0 / total,
                        "peak_rss_mb": max(s[2] for s in samples),
                        "origin_peak_in_flight": max(s[3] for s in samples),
                        "failed_images": max(s[4] for s in samples),
                    }
                rows.append({"origin": kind, "images": total, **figures})
                p, q = figures["pixpress"], figures["peer"]
                print(
                    "  %s: pixpress %.1f img/s, peer %.1f img/s (%.2f×), peak %d / %d, failed %d / %d"
                    % (kind, p["images_per_s"], q["images_per_s"], p["images_per_s"] / q["images_per_s"],
                       p["origin_peak_in_flight"], q["origin_peak_in_flight"], p["failed_images"], q["failed_images"]),
                    flush=True,
                )
            finally:
                origin.kill()
                origin.wait()
                shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        "| origin | images | pixpress img/s | peer img/s | pixpress ÷ peer | wall ÷ (CPU ÷ %d cores) | "
        "CPU ms/image (÷ engine %.1f) | origin's peak in flight, pixpress / peer | failed images, pixpress / peer | "
        "peak RSS MB, pixpress / peer |" % (cores, engine_ms)
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, q = r["pixpress"], r["peer"]
        print(
            "| %s | %d | %.1f | %.1f | %.2f× | %.2f | %.1f (%s) | %d / %d | %d / %d | %.0f / %.0f |"
            % (
                DESCRIBED[r["origin"]], r["images"], p["images_per_s"], q["images_per_s"],
                p["images_per_s"] / q["images_per_s"], p["busy_ratio"],
                p["cpu_ms_per_image"],
                "%.2f×" % (p["cpu_ms_per_image"] / engine_ms) if engine_ms >= 0.05 else "engine < 0.1 ms",
                p["origin_peak_in_flight"], q["origin_peak_in_flight"],
                p["failed_images"], q["failed_images"], p["peak_rss_mb"], q["peak_rss_mb"],
            )
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"engine_cpu_ms_per_image": engine_ms, "cores": cores, "rows": rows}, f, indent=2)
    if args.small:
        shutil.rmtree(images, ignore_errors=True)


if __name__ == "__main__":
    main()
