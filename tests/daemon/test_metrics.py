"""What a Prometheus server scraping ``--metrics`` over HTTP gets: the process's own health
(memory, file descriptors, start time, GC) beside ours, no ``_created`` series, HEAD answered,
and file counts that keep two models apart across a hot swap."""

from __future__ import annotations

import http.client
import re
import urllib.request

import pytest
from conftest import FakeClassifier, rows, running
from factories import digit_stroke, wait_for, write

from worker.daemon.loop import Daemon
from worker.daemon.metrics import Metrics, MetricsServer
from worker.daemon.settings import Settings


@pytest.fixture
def served():
    """A Metrics registry and its HTTP server on a free port."""
    metrics = Metrics()
    server = MetricsServer(metrics, "127.0.0.1:0")
    server.start()
    yield metrics, server
    server.stop()


def _scrape(server: MetricsServer) -> str:
    with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5) as answer:
        return answer.read().decode()


def _samples(text: str, name: str) -> dict[str, float]:
    """``name``'s samples: the label text between braces -> value."""
    return {labels: float(value)
            for labels, value in re.findall(rf"^{name}(?:{{(.*)}})? (\S+)$", text, re.MULTILINE)}


def test_the_process_platform_and_gc_collectors_are_scraped(served):
    text = _scrape(served[1])
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds",
                 "process_cpu_seconds_total", "python_gc_objects_collected_total"):
        assert _samples(text, name), f"{name} missing"
    assert _samples(text, "process_resident_memory_bytes")[""] > 1e6
    assert "python_info{" in text


def test_no_created_series(served):
    metrics, server = served
    metrics.batch(3, ["not-an-image"], 0.1, 1.0, [0.2], ("fake", "fake-1"))
    metrics.reloads.labels(result="loaded").inc()
    text = _scrape(server)
    assert "worker_files_total{" in text and "worker_batch_seconds_count" in text
    assert not [line for line in text.splitlines() if "_created" in line]


@pytest.mark.parametrize(("path", "status"), [("/metrics", 200), ("/healthz", 200), ("/readyz", 503),
                                              ("/nothing", 404)])
def test_head_answers_as_get_without_a_body(served, path, status):
    server = served[1]
    host, port = server.address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("HEAD", path)
        head = connection.getresponse()
        assert (head.status, head.read()) == (status, b"")
        connection.request("GET", path)
        get = connection.getresponse()
        body = get.read()
    finally:
        connection.close()
    assert get.status == status
    assert head.getheader("Content-Type") == get.getheader("Content-Type")
    if path != "/metrics":  # the registry's text changes between two scrapes (CPU, GC counts)
        assert int(head.getheader("Content-Length")) == len(body) > 0


def test_the_reload_counter_says_what_it_counts(served):
    help_line = re.search(r"^# HELP worker_reloads_total (.*)$", _scrape(served[1]), re.MULTILINE)
    assert help_line and "SIGHUP" in help_line.group(1) and "published" in help_line.group(1)


def test_files_are_counted_by_the_model_that_handled_them_across_a_hot_swap(boxes, served):
    inbox, outbox = boxes
    metrics, server = served
    first, second = FakeClassifier(), FakeClassifier()
    second.version = "fake-2"
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=0.1), first, metrics=metrics,
                    load_model=lambda: second)
    with running(daemon):
        for i in range(3):
            write(inbox / f"a{i}.png", digit_stroke())
        (inbox / "bad-a.png").write_text("not an image")
        assert wait_for(lambda: (outbox / "predictions.csv").exists() and len(rows(outbox)) == 3, 10)
        daemon.request_reload()
        assert wait_for(lambda: 'version="fake-2"' in _scrape(server), 10)
        for i in range(2):
            write(inbox / f"b{i}.png", digit_stroke())
        assert wait_for(lambda: len(rows(outbox)) == 5, 10)
        assert wait_for(lambda: sum(_samples(_scrape(server), "worker_files_total").values()) == 6, 10)
        scraped = _samples(_scrape(server), "worker_files_total")
    files = {}
    for labels, value in scraped.items():
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        files[label["outcome"], label["kind"], label["model"], label["model_version"]] = value
    assert files == {
        ("row", "", "fake", "fake-1"): 3.0,
        ("failed", "not-an-image", "fake", "fake-1"): 1.0,
        ("row", "", "fake", "fake-2"): 2.0,
    }, files
    assert {r["model_version"] for r in rows(outbox) if r["file"].startswith("b")} == {"fake-2"}


def test_the_textfile_holds_our_metrics_alone(tmp_path):
    """node_exporter serves its own process_* series: ours in its textfile would clash."""
    metrics = Metrics(textfile=tmp_path / "worker.prom")
    metrics.batch(1, [], 0.1, 1.0, [0.2], ("fake", "fake-1"))
    metrics.write_textfile()
    text = (tmp_path / "worker.prom").read_text()
    assert 'model_version="fake-1"' in text
    assert not re.findall(r"^(?:process|python)_\w+", text, re.MULTILINE)
    assert "_created" not in text


def test_the_brokers_liveness_counts_reach_the_textfile_too(tmp_path):
    """Every metric of the daemon's own goes to --metrics-file as well as /metrics: the two
    added with the heartbeats were registered beside the process collectors only."""
    from worker.daemon.metrics import Metrics

    textfile = tmp_path / "worker.prom"
    metrics = Metrics(textfile=textfile)
    metrics.remote_resent("worker-gone")
    metrics.broker_rejected("bad-seal")
    metrics.write_textfile()
    text = textfile.read_text()
    assert 'worker_remote_resent_total{reason="worker-gone"} 1.0' in text, text
    assert 'worker_broker_rejected_total{reason="bad-seal"} 1.0' in text, text
