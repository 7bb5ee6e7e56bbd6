"""Webhooks: one JSON POST per notice.  `text` is what Slack and Microsoft Teams
incoming webhooks show; `drorch` carries the facts for other receivers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from drorch import __version__
from drorch.errors import DrorchError


def post(url: str, payload: dict, timeout: float) -> int:
    """POST payload as JSON; the HTTP status (2xx), or DrorchError.  The URL is
    never part of a message: it may hold a token."""
    request = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": f"drorch/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        raise DrorchError(f"the webhook answered HTTP {exc.code} {exc.reason}",
                          "check the webhook URL and that the receiver accepts JSON posts") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DrorchError(f"the webhook could not be reached: {reason}",
                          "check the receiver's address and the network; the notice is tried again") from None
