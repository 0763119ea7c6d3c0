#!/usr/bin/env python3
"""An image origin on loopback for the end-to-end benchmark and the slow-origin checks.

    python3 bench/origin.py --dir DIR [--delay-ms 100] [--threaded] [--port 0]

Serves the files of DIR under /img/<anything>/<file name>, so one photo can be served under
many distinct URLs (the scaling runs repeat a few photos). Prints "port <n>" once listening.

Kinds of origin:
- default: asyncio, keep-alive, answers at once (or after --delay-ms, like a distant CDN: the
  delay costs no CPU);
- --threaded: Python's ThreadingHTTPServer, a thread per connection, competing for the same
  cores as the client (the slow origin of a small shop).
/drip/<n>/<file> sends the file's headers at once and then one byte per second (a stuck
origin); /missing/... answers 404.
"""

import argparse
import asyncio
import os
import sys
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


async def serve_asyncio(files, port, delay):
    async def handle(reader, writer):
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                line = request.split(b"\r\n", 1)[0].decode("latin-1")
                method, path = line.split(" ")[:2]
                status, name, mode = route(files, path)
                if delay:
                    await asyncio.sleep(delay)
                if status != 200:
                    body = b"not found"
                    writer.write(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(body), body)
                    )
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
                    for i in range(len(body)):
                        writer.write(body[i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(1.0)
                else:
                    writer.write(body)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print("port %d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def serve_threaded(files, port, delay):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            status, name, mode = route(files, self.path)
            if delay:
                import time

                time.sleep(delay)
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
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("port %d" % server.server_address[1], flush=True)
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--threaded", action="store_true")
    args = parser.parse_args()
    files = load(args.dir)
    if not files:
        sys.exit("no files in %s" % args.dir)
    delay = args.delay_ms / 1000.0
    if args.threaded:
        serve_threaded(files, args.port, delay)
    else:
        asyncio.run(serve_asyncio(files, args.port, delay))


if __name__ == "__main__":
    main()
