#!/usr/bin/env python3
"""An image origin on loopback for the end-to-end benchmark and the slow-origin checks.

    python3 bench/origin.py --dir DIR [--delay-ms 100 | --hit-miss-ms 100 | --lognormal-ms 50,1000]
                            [--rate-limit 8] [--reset-every 10] [--threaded [--http10]]
                            [--drip-secs 30] [--port 0]

Serves the files of DIR under /img/<anything>/<file name>, so one photo can be served under
many distinct URLs (the scaling runs repeat a few photos). Prints "port <n>" once listening.

Kinds of origin:
- default: asyncio, keep-alive, answers at once;
- --delay-ms N: every answer after N ms (a distant CDN: the delay costs no CPU);
- --hit-miss-ms N: every other answer after N ms, the rest at once (a CDN's misses and hits);
- --lognormal-ms M,P: answers after a log-normal delay with median M ms and 99th percentile P ms;
- --rate-limit N: beyond N requests in flight, 429 with `Retry-After: 1`;
- --reset-every N: every Nth request's connection is reset (RST) instead of answered;
- --threaded: Python's ThreadingHTTPServer (listen backlog 5, a thread per connection, headers
  and body in two writes), competing for the same cores as the client (a small shop's server);
  HTTP/1.1 keep-alive, or HTTP/1.0 (a connection per request) with --http10.
/drip/<n>/<file> sends the headers at once and then one byte per second for --drip-secs (30)
before closing the connection (a stuck origin); /missing/... answers 404.

GET /stats answers {"peak": most requests in flight at once, "requests": …, "statuses": {…}};
GET /stats?reset=1 answers the same and starts counting again. Neither counts as a request.
"""

import argparse
import asyncio
import json
import math
import os
import random
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def load(directory):
    files = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                files[name] = f.read()
    return files


def content_type(name):
    lower = name.lower()
    if lower.endswith((".jpg", ".jpeg")):
        return "image/jpeg"
    if lower.endswith(".png"):
        return "image/png"
    if lower.endswith(".webp"):
        return "image/webp"
    if lower.endswith(".gif"):
        return "image/gif"
    return "application/octet-stream"


def route(files, path):
    """(status, name, mode) for a request path."""
    parts = path.split("?")[0].strip("/").split("/")
    if len(parts) >= 2 and parts[0] in ("img", "drip") and parts[-1] in files:
        return 200, parts[-1], parts[0]
    return 404, None, None


class Stats:
    """Requests in flight (peak), requests served, and answers by status; thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.in_flight = 0
        self.peak = 0
        self.requests = 0
        self.statuses = {}

    def enter(self):
        with self.lock:
            self.in_flight += 1
            self.requests += 1
            self.peak = max(self.peak, self.in_flight)
            return self.in_flight

    def leave(self, status):
        with self.lock:
            self.in_flight -= 1
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def report(self, reset):
        with self.lock:
            body = json.dumps({"peak": self.peak, "requests": self.requests, "statuses": self.statuses})
            if reset:
                in_flight = self.in_flight
                self.reset()
                self.in_flight = in_flight
            return body.encode()


class Behaviour:
    """What the origin does to a request besides serving the file."""

    def __init__(self, args):
        self.delay = args.delay_ms / 1000.0
        self.hit_miss = args.hit_miss_ms / 1000.0
        self.lognormal = None
        if args.lognormal_ms:
            median, p99 = (float(v) / 1000.0 for v in args.lognormal_ms.split(","))
            self.lognormal = (math.log(median), math.log(p99 / median) / 2.326)
        self.rate_limit = args.rate_limit
        self.reset_every = args.reset_every
        self.drip_secs = args.drip_secs
        self.count = 0
        self.lock = threading.Lock()
        self.random = random.Random(7)

    def next(self):
        """(delay in seconds, reset this connection?) for the next request."""
        with self.lock:
            self.count += 1
            count = self.count
            delay = self.delay
            if self.hit_miss and count % 2 == 0:
                delay = self.hit_miss
            if self.lognormal:
                mu, sigma = self.lognormal
                delay = min(math.exp(self.random.gauss(mu, sigma)), 15.0)
        reset = bool(self.reset_every) and count % self.reset_every == 0
        return delay, reset


def reset_socket(sock):
    """Closes with an RST instead of a FIN (SO_LINGER with a zero timeout). An asyncio
    transport's socket cannot be closed directly: its caller aborts the transport instead."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    if hasattr(sock, "close"):
        sock.close()


async def serve_asyncio(files, port, behaviour, stats):
    async def handle(reader, writer):
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                line = request.split(b"\r\n", 1)[0].decode("latin-1")
                method, path = line.split(" ")[:2]
                if path.startswith("/stats"):
                    body = stats.report("reset=1" in path)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    await writer.drain()
                    continue
                in_flight = stats.enter()
                status = 200
                try:
                    delay, reset = behaviour.next()
                    if behaviour.rate_limit and in_flight > behaviour.rate_limit:
                        status = 429
                        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n")
                        await writer.drain()
                        continue
                    if delay:
                        await asyncio.sleep(delay)
                    if reset:
                        status = "reset"
                        reset_socket(writer.get_extra_info("socket"))
                        writer.transport.abort()
                        return
                    status, name, mode = route(files, path)
                    if status != 200:
                        body = b"not found"
                        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                        await writer.drain()
                        continue
                    body = files[name]
                    head = (
                        "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                        % (content_type(name), len(body))
                    ).encode()
                    writer.write(head)
                    if method == "HEAD":
                        await writer.drain()
                        continue
                    if mode == "drip":
                        status = "drip"
                        for i in range(min(len(body), behaviour.drip_secs)):
                            writer.write(body[i : i + 1])
                            await writer.drain()
                            await asyncio.sleep(1.0)
                        return
                    writer.write(body)
                    await writer.drain()
                finally:
                    stats.leave(status)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print("port %d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def serve_threaded(files, port, behaviour, stats, http10):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0" if http10 else "HTTP/1.1"

        def do_GET(self):
            if self.path.startswith("/stats"):
                body = stats.report("reset=1" in self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            in_flight = stats.enter()
            status = 200
            try:
                delay, reset = behaviour.next()
                if behaviour.rate_limit and in_flight > behaviour.rate_limit:
                    status = 429
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if delay:
                    time.sleep(delay)
                if reset:
                    status = "reset"
                    reset_socket(self.connection)
                    self.close_connection = True
                    return
                status, name, mode = route(files, self.path)
                if status != 200:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = files[name]
                self.send_response(200)
                self.send_header("Content-Type", content_type(name))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "drip":
                    status = "drip"
                    for i in range(min(len(body), behaviour.drip_secs)):
                        self.wfile.write(body[i : i + 1])
                        time.sleep(1.0)
                    self.close_connection = True
                    return
                self.wfile.write(body)
            finally:
                stats.leave(status)

        def log_message(self, *args):
            pass

        def handle_one_request(self):
            try:
                super().handle_one_request()
            except OSError:
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("port %d" % server.server_address[1], flush=True)
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--hit-miss-ms", type=float, default=0.0)
    parser.add_argument("--lognormal-ms", default="", help="MEDIAN,P99 in milliseconds")
    parser.add_argument("--rate-limit", type=int, default=0)
    parser.add_argument("--reset-every", type=int, default=0)
    parser.add_argument("--drip-secs", type=int, default=30)
    parser.add_argument("--threaded", action="store_true")
    parser.add_argument("--http10", action="store_true")
    args = parser.parse_args()
    files = load(args.dir)
    if not files:
        sys.exit("no files in %s" % args.dir)
    behaviour = Behaviour(args)
    stats = Stats()
    if args.threaded:
        serve_threaded(files, args.port, behaviour, stats, args.http10)
    else:
        asyncio.run(serve_asyncio(files, args.port, behaviour, stats))


if __name__ == "__main__":
    main()
