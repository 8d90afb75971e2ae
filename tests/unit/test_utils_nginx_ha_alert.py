"""Webhook delivery against a real HTTP server on 127.0.0.1: retries, give-ups, bounded time."""

import socket
import time

import pytest

from tests.support import formula
from tests.support.webhook import WebhookServer

alert = formula.load_module("_utils", "nginx_ha_alert")


def test_payload_is_slack_compatible():
    body = alert.payload("warning", "VI_web: MASTER moved from web-a to web-b", old_owner="web-a", new_owner="web-b")
    assert body["text"] == ":warning: nginx-ha WARNING: VI_web: MASTER moved from web-a to web-b"
    assert body["nginx_ha"]["old_owner"] == "web-a" and body["nginx_ha"]["severity"] == "warning"


def test_unknown_severity():
    with pytest.raises(ValueError):
        alert.payload("fatal", "x")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "127.0.0.1:8080/hook", "http://"])
def test_only_http_urls(url):
    ret = alert.post(url, {"text": "x"})
    assert not ret["ok"] and ret["attempts"] == 0 and "not an http(s) URL" in ret["error"]


def test_delivered_first_time():
    with WebhookServer() as hook:
        ret = alert.post(hook.url, {"text": "hello"}, timeout=1, retries=3)
        assert ret["ok"] and ret["status"] == 200 and ret["attempts"] == 1
        assert hook.wait_for(1)[0]["body"] == {"text": "hello"}


def test_server_errors_and_429_are_retried():
    with WebhookServer() as hook:
        hook.fail_next(1, 500)
        hook.fail_next(1, 429)
        ret = alert.post(hook.url, {"text": "x"}, timeout=1, retries=3, backoff=0.01)
        assert ret["ok"] and ret["attempts"] == 3 and len(hook.wait_for(1)) == 1


def test_client_errors_are_final():
    with WebhookServer() as hook:
        hook.fail_next(3, 404)
        ret = alert.post(hook.url, {"text": "x"}, timeout=1, retries=3, backoff=0.01)
        assert not ret["ok"] and ret["status"] == 404 and ret["attempts"] == 1 and hook.attempts == 1


def test_connection_refused_is_retried_then_given_up():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = []
    ret = alert.post(f"http://127.0.0.1:{port}/hook", {"text": "x"}, timeout=1, retries=3, backoff=0.2, backoff_max=0.3, sleep=sleeps.append)
    assert not ret["ok"] and ret["attempts"] == 3 and ret["status"] is None and ret["error"]
    assert sleeps == [0.2, 0.3]


def test_hung_webhook_costs_at_most_retries_times_timeout():
    with WebhookServer() as hook:
        hook.stall_next(3, 2)
        started = time.monotonic()
        ret = alert.post(hook.url, {"text": "x"}, timeout=0.25, retries=3, backoff=0.05)
        took = time.monotonic() - started
    assert not ret["ok"] and ret["attempts"] == 3
    assert took < 3 * 0.25 + 0.05 + 0.1 + 0.5, took
