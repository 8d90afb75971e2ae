"""
A slow upstream for the benchmark's load scenario: every request waits ``--delay`` seconds, then 200.

Runs inside a web node (standard library only), one thread per request, so nginx's workers hold
many proxied connections open at once (``bench/scenarios.py: Load``):

    python3 bench/slow_upstream.py --port 8091 --delay 0.5 --max-seconds 90
"""

import argparse
import http.server
import socketserver
import sys
import threading
import time


class Handler(http.server.BaseHTTPRequestHandler):
    delay = 0.5

    def do_GET(self):  # noqa: N802 - http.server's name
        time.sleep(self.delay)
        body = b"slow\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8091)
    p.add_argument("--delay", type=float, default=0.5)
    p.add_argument("--max-seconds", type=float, default=120.0)
    args = p.parse_args(argv)
    Handler.delay = args.delay
    server = Server(("127.0.0.1", args.port), Handler)
    threading.Timer(args.max_seconds, server.shutdown).start()  # bounded by construction
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
