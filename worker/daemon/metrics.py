"""Prometheus metrics, and the small HTTP server that shows them with health checks.

One registry per daemon (``own``); each metric is updated where its event happens (the pipeline
when a batch is finished, the daemon when it reloads or turns), never recomputed by scanning
files. ``worker_files_total`` counts each file once, when its row or error record is durable:
for a daemon started on an empty outbox, its sum equals the outbox's rows plus error records.

    GET /metrics   the registry, in Prometheus' text format
    GET /healthz   200 while the loop turns (it turned in the last ``HEALTHY_SECONDS``)
    GET /readyz    200 when the model is loaded, the inbox watched and the outbox writable (and
                   with --broker, Redis answers)
    HEAD           any of them: the same status and headers, no body

``/metrics`` serves ``registry``: ours and prometheus_client's process (memory, CPU, open
files, start time), platform (Python's version) and garbage collector collectors, as the
library's default registry would. The textfile holds ours alone: its ``process_*`` series would
clash with node_exporter's own. Counters and histograms carry no ``_created`` series: the
daemon's start is ``process_start_time_seconds`` already, and a ``_created`` for each label set
doubled what every scrape stores. Counts that a hot model swap could mix (files by outcome)
carry the model's name and version as labels, as each row does.

For hosts that scrape no ports, ``textfile`` is node_exporter's textfile form: the registry
written atomically (a temporary renamed over it) from the loop each minute and at the stop. It
is written by the loop itself, so a stuck loop shows as a stale file
(``node_textfile_mtime_seconds``), as ``/healthz`` would show it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    write_to_textfile,
)

log = logging.getLogger(__name__)

# The loop turns at least every fraction of a second when idle; a minute without a turn is stuck.
HEALTHY_SECONDS = 60.0
TEXTFILE_SECONDS = 60.0
BATCH_FILES = (1, 4, 16, 64, 128, 256, 512)
# A file without a close event waits the settle time (1 s) before its claim: buckets around it.
LATENCY_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5, 10, 30, 60, 300)
BATCH_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.monotonic, textfile: Path | None = None) -> None:
        self.clock = clock
        self.textfile = textfile
        self._textfile_written = float("-inf")
        disable_created_metrics()  # a process-wide switch in prometheus_client, read at each scrape
        self.own = CollectorRegistry()  # the daemon's own metrics: all the textfile holds
        self.registry = CollectorRegistry()  # what /metrics serves: those and the process's
        self.registry.register(self.own)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        r = self.own
        self.files = Counter("worker_files", "Files finished, by outcome (row or failed), error kind, "
                             "and the model that handled them", ["outcome", "kind", "model", "model_version"],
                             registry=r)
        self.batch_files = Histogram("worker_batch_files", "Files in a finished batch",
                                     buckets=BATCH_FILES, registry=r)
        self.latency = Histogram("worker_file_latency_seconds",
                                 "From a file arriving whole in the inbox (its ctime) to its row or "
                                 "error record durable", buckets=LATENCY_SECONDS, registry=r)
        self.batch_seconds = Histogram("worker_batch_seconds", "From loading a batch to its inputs archived",
                                       buckets=BATCH_SECONDS, registry=r)
        self.backlog = Gauge("worker_backlog_files", "Files seen in the inbox, not yet claimed", registry=r)
        self.recovering = Gauge("worker_recovering_files", "Claims left by a crash, not yet finished",
                                registry=r)
        self.model = Gauge("worker_model_info", "The model serving", ["name", "version", "dataset"],
                           registry=r)
        self.last_success = Gauge("worker_last_success_timestamp_seconds",
                                  "When a batch last became durable (Unix time)", registry=r)
        self.reloads = Counter("worker_reloads", "Model loads tried on a reload (SIGHUP) or a version "
                               "published, by result (loaded, failed, refused)", ["result"], registry=r)
        self._remote: tuple[Gauge, ...] | None = None  # made at the first remote(): --broker only
        self._rejected: Counter | None = None  # made at the first broker_rejected()
        self._resent: Counter | None = None  # made at the first remote_resent()
        self._alive: Gauge | None = None  # made at the first remote() that knows it
        self.last_turn = clock()
        self.ready = False

    def batch(self, rows: int, failures: list[str], seconds: float, at: float,
              latencies: list[float] = (), model: tuple[str, str] = ("", "")) -> None:
        """A batch durable: ``model`` is the (name, version) its rows and error records carry."""
        name, version = model
        for latency in latencies:
            self.latency.observe(latency)
        if rows:
            self.files.labels(outcome="row", kind="", model=name, model_version=version).inc(rows)
        for kind in failures:
            self.files.labels(outcome="failed", kind=kind, model=name, model_version=version).inc()
        self.batch_files.observe(rows + len(failures))
        self.batch_seconds.observe(seconds)
        self.last_success.set(at)

    def remote(self, batches: int, files: int, oldest: float, broker_up: bool,
               alive: int | None = None) -> None:
        """With --broker: the work out with the classify workers, and how many worker processes
        have a heartbeat (None: not looked yet)."""
        if self._remote is None:
            r = self.own
            self._remote = (
                Gauge("worker_remote_batches", "Batches sent to the classify workers, not yet answered",
                      registry=r),
                Gauge("worker_remote_files", "Files in those batches", registry=r),
                Gauge("worker_remote_oldest_seconds", "Age of the oldest unanswered batch (it grows "
                      "while no classify worker answers)", registry=r),
                Gauge("worker_broker_up", "1 while Redis answers the watcher, else 0", registry=r),
            )
        for gauge, value in zip(self._remote, (batches, files, oldest, int(broker_up)), strict=True):
            gauge.set(value)
        if alive is not None:
            if self._alive is None:
                self._alive = Gauge("worker_remote_workers_alive", "Classify worker processes with a "
                                    "heartbeat in Redis", registry=self.own)
            self._alive.set(alive)

    def remote_resent(self, reason: str) -> None:
        """With --broker: a batch sent again, by why (worker/remote/liveness.py, worker/remote/watcher.py)."""
        if self._resent is None:
            self._resent = Counter("worker_remote_resent", "Batches sent to the classify workers again, by "
                                   "why: worker-gone, untaken, timeout, redis-restart", ["reason"],
                                   registry=self.own)
        self._resent.labels(reason=reason).inc()

    def broker_rejected(self, reason: str) -> None:
        """With --broker: a message from Redis dropped, by the check it failed."""
        if self._rejected is None:
            self._rejected = Counter("worker_broker_rejected", "Messages from the broker dropped, by the "
                                     "check they failed (worker/remote/messages.py)", ["reason"],
                                     registry=self.own)
        self._rejected.labels(reason=reason).inc()

    def serving(self, name: str, version: str, dataset: str) -> None:
        self.model.clear()
        self.model.labels(name=name, version=version, dataset=dataset).set(1)

    def turned(self, backlog: int, recovering: int, ready: bool) -> None:
        self.last_turn = self.clock()
        self.backlog.set(backlog)
        self.recovering.set(recovering)
        self.ready = ready
        if self.textfile is not None and self.last_turn - self._textfile_written >= TEXTFILE_SECONDS:
            self.write_textfile()

    def write_textfile(self) -> None:
        """Write the registry to ``textfile`` now; a failure is logged, never raised (metrics
        must not stop the work), and tried again at the next minute."""
        self._textfile_written = self.clock()
        try:
            write_to_textfile(str(self.textfile), self.own)
        except OSError as exc:
            log.warning("cannot write metrics to %s: %s", self.textfile, exc)

    def healthy(self) -> bool:
        return self.clock() - self.last_turn < HEALTHY_SECONDS


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port``, on a thread of its own."""

    def __init__(self, metrics: Metrics, address: str) -> None:
        host, _, port = address.rpartition(":")
        handler = _handler_for(metrics)
        self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self.thread.start()
        log.info("metrics on http://%s/metrics", self.address)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _handler_for(metrics: Metrics):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._answer(*_page(metrics, self.path))

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
            # A HEAD is a GET without the body (RFC 9110): the same status and Content-Length.
            self._answer(*_page(metrics, self.path), head=True)

        def _answer(self, status: int, body: bytes, content_type: str, head: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
            log.debug("metrics: " + format, *args)

    return Handler


def _page(metrics: Metrics, path: str) -> tuple[int, bytes, str]:
    """(status, body, content type) of one of the server's paths."""
    text = "text/plain; charset=utf-8"
    if path == "/metrics":
        return 200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST
    if path == "/healthz":
        ok = metrics.healthy()
        return (200, b"ok\n", text) if ok else (503, b"the loop is not turning\n", text)
    if path == "/readyz":
        ok = metrics.ready
        return (200, b"ready\n", text) if ok else (503, b"not ready\n", text)
    return 404, b"not found\n", text
