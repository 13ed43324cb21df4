"""Alerts: a JSON summary POSTed to a webhook when a detection finds new anomalies (no Spark import).

A webhook that fails (refused, a timeout, a status other than 2xx) is retried with a growing pause
and then logged; it never fails the scoring, whose verdicts are already committed. The outcome is
returned, so the detection's row in ``detection_runs`` records whether the alert went out.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any, Mapping

log = logging.getLogger(__name__)

#: Tries of one alert, and the pause before the second (doubled before each later one).
ATTEMPTS = 3
FIRST_PAUSE_S = 1.0


def post_alert(url: str, payload: Mapping[str, Any], attempts: int = ATTEMPTS, timeout_s: float = 10.0,
               first_pause_s: float = FIRST_PAUSE_S) -> dict:
    """POST ``payload`` as JSON to ``url``; returns ``{"status": "sent" | "failed", "attempts": n,
    "error": last error or None}``. Never raises."""
    body = json.dumps(payload, default=str).encode()
    error = None
    for attempt in range(1, attempts + 1):
        try:
            request = urllib.request.Request(url, data=body, method="POST",
                                             headers={"Content-Type": "application/json", "User-Agent": "deeplog-spark"})
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - the user's URL
                if 200 <= response.status < 300:
                    log.info("alert: posted to %s (attempt %d)", url, attempt)
                    return {"status": "sent", "attempts": attempt, "error": None}
                error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt < attempts:
            pause = first_pause_s * 2 ** (attempt - 1)
            log.warning("alert: %s failed (%s), retry %d/%d in %.1f s", url, error, attempt, attempts - 1, pause)
            time.sleep(pause)
    log.error("alert: %s failed after %d attempts (%s); the verdicts are written, the alert is not sent",
              url, attempts, error)
    return {"status": "failed", "attempts": attempts, "error": error}
