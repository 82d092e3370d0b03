"""Read chromium's net log (`--log-net-log=FILE`, written when the browser closes).

It sees every request the browser makes, also those no page event reports (the favicon
request the browser sends on its own), with the status it got or the network error.
"""

import json
from pathlib import Path


def failed_requests(netlog: Path, prefix: str) -> list[str]:
    """'URL: why' for each request to a URL starting with `prefix` that failed or got a 4xx/5xx."""
    log = json.loads(netlog.read_text())
    kinds = {code: name for name, code in log["constants"]["logEventTypes"].items()}
    urls: dict[int, str] = {}
    failures: dict[int, str] = {}
    for event in log["events"]:
        source, kind, params = event["source"]["id"], kinds[event["type"]], event.get("params") or {}
        if kind == "REQUEST_ALIVE" and "url" in params:
            urls[source] = params["url"]
        elif kind == "HTTP_TRANSACTION_READ_RESPONSE_HEADERS":
            status_line = params["headers"][0]  # e.g. "HTTP/1.1 404 Not Found"
            if int(status_line.split()[1]) >= 400:
                failures[source] = status_line
        elif kind == "REQUEST_ALIVE" and "net_error" in params:
            failures.setdefault(source, f"net error {params['net_error']}")
    return [f"{urls[source]}: {why}" for source, why in failures.items()
            if urls.get(source, "").startswith(prefix)]
