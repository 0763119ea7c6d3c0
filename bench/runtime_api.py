#!/usr/bin/env python3
"""Init time of Lambda bootstraps against a minimal Lambda Runtime API stand-in on loopback.

    python3 bench/runtime_api.py [--runs 10] NAME=PATH/TO/bootstrap ...

For each bootstrap, starts it `--runs` times with the environment Lambda gives a function
(AWS_LAMBDA_RUNTIME_API pointing here, the function's variables, a region and static
credentials so the SDK reads nothing else) and measures the time from process start to its
first `GET /2018-06-01/runtime/invocation/next`: the function's init, what a cold start adds
before the first event can be handed over. The process is then stopped; no event is sent.
Prints min / median / max milliseconds per bootstrap.
"""

import argparse
import http.server
import os
import statistics
import subprocess
import threading
import time

FIRST_NEXT = threading.Event()


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next"):
            FIRST_NEXT.set()
            # Hold the long poll: the function waits for an event that never comes.
            time.sleep(5)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def environment(port):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % port,
        "AWS_LAMBDA_FUNCTION_NAME": "pixpress-init",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/pixpress-init",
        "AWS_LAMBDA_LOG_STREAM_NAME": "init",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
        "TABLE_NAME": "pixpress-requests",
        "ROWS_QUEUE_URL": "http://127.0.0.1:9/000000000000/pixpress-rows",
        "WEBHOOKS_QUEUE_URL": "http://127.0.0.1:9/000000000000/pixpress-webhooks",
        "BUCKET_NAME": "pixpress-data",
        "MAX_RECEIVE_COUNT": "5",
        "JPEG_QUALITY": "50",
        "RUST_LOG": "error",
    }
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("bootstraps", nargs="+", metavar="NAME=PATH")
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    print("| function | init ms (min / median / max of %d) |" % args.runs)
    print("|---|---|")
    for spec in args.bootstraps:
        name, path = spec.split("=", 1)
        samples = []
        for _ in range(args.runs):
            FIRST_NEXT.clear()
            started = time.monotonic()
            process = subprocess.Popen([path], env=environment(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if FIRST_NEXT.wait(timeout=10):
                samples.append((time.monotonic() - started) * 1000.0)
            process.kill()
            process.wait()
        if samples:
            print(
                "| %s | %.1f / %.1f / %.1f |"
                % (name, min(samples), statistics.median(samples), max(samples))
            )
        else:
            print("| %s | never asked for an event |" % name)
    server.shutdown()


if __name__ == "__main__":
    main()
