"""``worker status --broker``: what the watcher sees of the classify workers, read from Redis."""

from __future__ import annotations

from worker.remote.broker import QUEUE, redis_client
from worker.remote.liveness import look
from worker.urls import safe_url


def broker_status(url: str, key: bytes | None = None) -> dict:
    """For ``worker status --broker``: the classify worker processes alive by their heartbeat
    (what the watcher sees), and the batches queued for them."""
    report = {"url": safe_url(url), "reachable": False, "workers": [], "queued": None, "error": None}
    try:
        client = redis_client(url)
        queued = client.llen(QUEUE)
        alive = look(client, key, []).alive
    except Exception as exc:  # noqa: BLE001 - redis raises many kinds for one outage
        report["error"] = str(exc)
        return report
    workers = [{"host": b.host, "pid": b.pid, "batch": b.task, "idle_seconds": round(b.idle, 1)}
               for _, b in sorted(alive.items())]
    report.update(reachable=True, queued=queued, workers=workers)
    return report
