"""
The benchmark's client: requests the VIP at a fixed rate and records every answer.

Runs inside the lab's client host (standard library only; the bench starts it with the host's
python3 and this file's path, /work is visible in every host):

    python3 bench/poller.py --url http://203.0.113.100/ --out /tmp/poll.txt --stop-file /tmp/poll.stop

One request every ``--interval`` seconds (a new TCP connection each, HTTP/1.0), each with a total
deadline of ``--timeout`` seconds. By default the client is *open-loop*: a request starts at every
slot whether or not earlier ones have answered (each runs in its own thread, at most
``--max-inflight``), the way many independent users reach a VIP; a request black-holed by a dead
MASTER costs that request its deadline, not the requests after it. With ``--sequential`` a request
starts only after the previous one ended (one that runs late delays the next, missed slots are
skipped, never made up in a burst): the view of a single user, whose every failed request costs a
whole ``--timeout`` before the next one is sent. Each request appends one line
``<start> <duration> <ok 0|1> <node|->`` (wall-clock seconds) to ``--out``: ok means HTTP 200
within the deadline; node is the ``X-Served-By`` header, else the first of ``--nodes`` the page
names. Stops when ``--stop-file`` exists, after ``--max-seconds`` or ``--max-requests``, whichever
comes first (bounded by construction).
"""

import argparse
import socket
import sys
import threading
import time
from os.path import exists
from urllib.parse import urlsplit


def request(host, port, path, timeout, nodes):
    """(ok, node) for one GET with a total deadline."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return False, None
    try:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: nginx-ha-bench\r\n\r\n".encode())
        data = b""
        while len(data) < 65536:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, None
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        return False, None
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()
    if len(status) < 2 or status[1] != "200":
        return False, None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-served-by":
            return True, value.strip() or "?"
    text = body.decode("utf-8", "replace")
    for node in nodes:
        if node in text:
            return True, node
    return True, "?"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--timeout", type=float, default=0.25)
    p.add_argument("--nodes", default="web-a,web-b")
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--max-requests", type=int, default=10000)
    p.add_argument("--sequential", action="store_true", help="one request at a time (default: one per slot, open-loop)")
    p.add_argument("--max-inflight", type=int, default=64, help="open-loop: requests in flight at most (a slot is skipped beyond)")
    args = p.parse_args(argv)
    url = urlsplit(args.url)
    host, port, path = url.hostname, url.port or 80, url.path or "/"
    if url.query:
        path += "?" + url.query
    nodes = [n for n in args.nodes.split(",") if n]
    start = time.monotonic()
    slot = start
    count = 0
    lock = threading.Lock()
    inflight = threading.BoundedSemaphore(max(1, args.max_inflight))

    with open(args.out, "a", buffering=1) as out:

        def one():
            try:
                t = time.time()
                m0 = time.monotonic()
                ok, node = request(host, port, path, args.timeout, nodes)
                dt = time.monotonic() - m0
                with lock:
                    out.write(f"{t:.6f} {dt:.6f} {1 if ok else 0} {node or '-'}\n")
            finally:
                inflight.release()

        threads = []
        while count < args.max_requests and time.monotonic() - start < args.max_seconds:
            if exists(args.stop_file):
                break
            if inflight.acquire(blocking=False):
                count += 1
                if args.sequential:
                    one()
                else:
                    th = threading.Thread(target=one, daemon=True)
                    th.start()
                    threads.append(th)
                    if len(threads) > 256:
                        threads = [x for x in threads if x.is_alive()]
            slot += args.interval
            now = time.monotonic()
            if slot < now:  # late: skip the missed slots
                slot = now
            time.sleep(max(0.0, slot - now))
        for th in threads:
            th.join(args.timeout + 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
