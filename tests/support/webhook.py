"""A real HTTP server on 127.0.0.1 that records webhook POSTs (and can fail or stall on purpose)."""

import http.server
import json
import threading
import time


class WebhookServer:
    """
    ``with WebhookServer() as hook:`` then POST to ``hook.url``. ``hook.requests`` lists the
    decoded JSON bodies received, ``hook.fail_next(n, status)`` answers the next n requests with
    ``status``, ``hook.stall_next(n, seconds)`` holds the next n requests before answering.
    """

    def __init__(self):
        self.requests = []
        self.attempts = 0
        self._fail = []
        self._stall = []
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self.received = threading.Condition(self._lock)

    def fail_next(self, count, status=500):
        with self._lock:
            self._fail.extend([status] * count)

    def stall_next(self, count, seconds):
        with self._lock:
            self._stall.extend([seconds] * count)

    def reset(self):
        with self._lock:
            self.requests.clear()
            self.attempts = 0
            self._fail.clear()
            self._stall.clear()

    def wait_for(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        with self.received:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.received.wait(left)
            return list(self.requests)

    def _handler(self):
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with hook._lock:
                    hook.attempts += 1
                    stall = hook._stall.pop(0) if hook._stall else 0
                    status = hook._fail.pop(0) if hook._fail else 200
                if stall:
                    time.sleep(stall)
                if status == 200:
                    with hook.received:
                        hook.requests.append({"body": json.loads(body), "content_type": self.headers.get("Content-Type")})
                        hook.received.notify_all()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the client gave up (timeout)
                    pass

            def log_message(self, *args):
                pass

        return Handler

    def __enter__(self):
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self):
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook"
