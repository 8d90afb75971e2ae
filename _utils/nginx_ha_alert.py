"""
nginx-ha alerts: the message and its delivery to a webhook (pure Python, no Salt calls).

``payload(severity, message, **fields)`` builds a Slack-compatible body (``text``) that also
carries the structured fields under ``nginx_ha``; ``post(url, body, ...)`` POSTs it as JSON with a
timeout per attempt and a bounded number of attempts, so a dead webhook costs at most
``retries * timeout + (retries - 1) * backoff_max`` seconds and never raises.
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request

__virtualname__ = "nginx_ha_alert"

SEVERITIES = ("info", "warning", "critical")
_ICONS = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


def __virtual__():
    return __virtualname__


def check_severity(severity):
    severity = str(severity).lower()
    if severity not in SEVERITIES:
        raise ValueError(f"alert severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    return severity


def payload(severity, message, **fields):
    """The webhook body: ``text`` for Slack (and compatibles), the details under ``nginx_ha``."""
    severity = check_severity(severity)
    return {
        "text": f"{_ICONS[severity]} nginx-ha {severity.upper()}: {message}",
        "nginx_ha": dict(fields, severity=severity, message=message),
    }


def check_url(url):
    parts = urllib.parse.urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"webhook url {url!r} is not an http(s) URL")
    return url


def _retryable(status):
    return status is None or status == 429 or status >= 500


def post(url, body, timeout=2.0, retries=3, backoff=0.5, backoff_max=2.0, sleep=time.sleep):
    """
    POST ``body`` as JSON to ``url``. Retries connection errors, timeouts, HTTP 429 and 5xx (other
    4xx are final) up to ``retries`` attempts in all, sleeping ``backoff`` (doubling, at most
    ``backoff_max``) between them. Returns ``{ok, attempts, status, error, seconds}``; never raises.
    """
    started = time.monotonic()
    result = {"ok": False, "attempts": 0, "status": None, "error": None}
    try:
        check_url(url)
        data = json.dumps(body).encode("utf-8")
    except (ValueError, TypeError) as exc:
        result.update(error=str(exc), seconds=0.0)
        return result
    retries = max(1, int(retries))
    delay = float(backoff)
    for attempt in range(1, retries + 1):
        result["attempts"] = attempt
        request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json", "User-Agent": "nginx-ha-alert"})
        try:
            with urllib.request.urlopen(request, timeout=float(timeout)) as resp:  # nosec: operator-configured URL
                result.update(status=resp.status, ok=200 <= resp.status < 300, error=None)
        except urllib.error.HTTPError as exc:
            result.update(status=exc.code, error=f"HTTP {exc.code}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            result.update(status=None, error=str(getattr(exc, "reason", exc)))
        if result["ok"] or not _retryable(result["status"]):
            break
        if attempt < retries:
            sleep(min(delay, float(backoff_max)))
            delay *= 2
    result["seconds"] = round(time.monotonic() - started, 3)
    return result
