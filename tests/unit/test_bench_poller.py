"""The benchmark's client (bench/poller.py): open-loop by default, sequential on request."""

import threading

import pytest

from bench import poller, slow_upstream, stats


@pytest.fixture
def slow_server():
    handler = type("Slow", (slow_upstream.Handler,), {"delay": 0.2})  # the load scenario's upstream
    server = slow_upstream.Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/?x=1"
    server.shutdown()


def run(url, tmp_path, *extra):
    out = tmp_path / "poll.txt"
    poller.main(["--url", url, "--out", str(out), "--stop-file", str(tmp_path / "stop"), "--interval", "0.02",
                 "--timeout", "0.25", "--max-seconds", "0.6", *extra])
    return stats.parse(out.read_text())


def test_open_loop_client_sends_at_every_slot_while_answers_are_slow(slow_server, tmp_path):
    samples = run(slow_server, tmp_path)
    # ~30 slots in 0.6 s, none waits for a 0.2 s answer (one at a time, at most 3 would fit)
    assert len(samples) >= 10
    assert all(s.ok and s.node == "?" for s in samples)  # answered, by no node the page names


def test_sequential_client_waits_for_each_answer(slow_server, tmp_path):
    samples = run(slow_server, tmp_path, "--sequential")
    assert 1 <= len(samples) <= 4  # each waits 0.2 s for its answer
    assert all(s.ok for s in samples)


def test_failed_requests_do_not_hold_back_the_next_slots(tmp_path):
    samples = run("http://127.0.0.1:9/", tmp_path)  # discard port: refused at once
    assert len(samples) >= 10 and not any(s.ok for s in samples)
