"""The daemon as systemd sees it: READY, the watchdog pinged from the loop (and silent when the
loop is stuck), STATUS, STOPPING; and SIGHUP reloading between batches."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from conftest import rows, running
from factories import digit_stroke, wait_for, write

from worker.daemon.loop import Daemon
from worker.daemon.service import ServiceNotifier
from worker.daemon.settings import Settings


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A datagram socket standing in for systemd's; collects what the daemon says."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    messages: list[tuple[float, str]] = []

    def collect() -> list[tuple[float, str]]:
        while True:
            try:
                messages.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                return messages

    yield collect
    sock.close()


def _pings(messages) -> list[float]:
    return [at for at, text in messages if text == "WATCHDOG=1"]


def test_the_loop_pings_the_watchdog_and_not_when_it_is_stuck(boxes, fake_classifier, notify_socket, faults):
    inbox, outbox = boxes
    watchdog = {"WATCHDOG_USEC": "100000", "WATCHDOG_PID": str(os.getpid())}  # a ping every 50 ms
    service = ServiceNotifier({"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"], **watchdog})
    stuck, release = threading.Event(), threading.Event()

    def hang(path: str) -> None:  # a read that never returns until released: a stuck batch
        stuck.set()
        release.wait(30)

    faults.before(os, "open", when=lambda path: path.endswith("stuck.png"), action=hang)
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=0.1), fake_classifier, service=service)
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,))
    thread.start()
    try:
        assert wait_for(lambda: len(_pings(notify_socket())) >= 3, 10), "no pings while healthy"
        write(inbox / "stuck.png", digit_stroke())
        assert stuck.wait(10)
        notify_socket()  # what was sent before the loop got stuck
        blocked_at = time.monotonic()
        time.sleep(0.6)  # six watchdog intervals with the loop stuck
        silent = [at for at in _pings(notify_socket()) if at > blocked_at]
        release.set()
        assert wait_for(lambda: len(_pings(notify_socket())) > len(silent) + 3, 10), "pings resume"
    finally:
        release.set()
        stop.set()
        thread.join(10)
    assert silent == [], "the watchdog was pinged while the loop was stuck"
    said = [text for _, text in notify_socket()]
    assert said[0] == "READY=1" and said[-1] == "STOPPING=1"
    assert any(text.startswith("STATUS=") and "files done" in text for text in said)
    assert len(rows(outbox)) == 1


def test_a_reload_reopens_moved_outbox_files_and_loads_the_model_again(boxes, fake_classifier, notify_socket):
    inbox, outbox = boxes
    loads = []

    def load_model():
        loads.append(1)
        return fake_classifier

    service = ServiceNotifier({"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]})
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=0.1), fake_classifier, service=service,
                    load_model=load_model)
    with running(daemon):
        write(inbox / "before.png", digit_stroke())
        assert wait_for(lambda: (outbox / "predictions.csv").exists() and len(rows(outbox)) == 1)
        rotated = outbox / "rotated"
        rotated.mkdir()
        for name in ("predictions.csv", "predictions.jsonl"):
            os.rename(outbox / name, rotated / name)
        daemon.request_reload()
        assert wait_for(lambda: (outbox / "predictions.csv").exists())
        write(inbox / "after.png", digit_stroke())
        assert wait_for(lambda: len(rows(outbox)) == 1)
    assert [r["file"] for r in rows(rotated)] == ["before.png"]
    assert [r["file"] for r in rows(outbox)] == ["after.png"], "new rows in new files, with a header"
    assert loads == [1]
    said = [text for _, text in notify_socket()]
    assert any(text.startswith("RELOADING=1") for text in said)
    assert said.count("READY=1") == 2


def _get(address: str, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _files_total(text: str) -> dict[str, float]:
    """worker_files_total by "outcome/kind", from the text format."""
    import re

    found = {}
    for labels, value in re.findall(r"^worker_files_total\{(.*)\} (\S+)$", text, re.MULTILINE):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        found[f"{label['outcome']}/{label['kind']}"] = float(value)
    return found


def test_metrics_scraped_during_a_burst_match_the_outbox(boxes, fake_classifier):

    from worker.daemon.metrics import Metrics, MetricsServer

    inbox, outbox = boxes
    metrics = Metrics()
    server = MetricsServer(metrics, "127.0.0.1:0")
    server.start()
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=0.1, batch_size=16), fake_classifier,
                    metrics=metrics)
    try:
        with running(daemon):
            _burst_and_scrape(inbox, outbox, server)
            health, ready = _get(server.address, "/healthz"), _get(server.address, "/readyz")
    finally:
        server.stop()
    totals = _files_total(_get_text_after_stop(metrics))
    assert totals == {"row/": 300.0, "failed/not-an-image": 5.0}, totals
    assert health[0] == 200 and ready[0] == 200
    assert 'version="fake-1"' in _get_text_after_stop(metrics)


def _burst_and_scrape(inbox, outbox, server) -> None:
    """300 digits and 5 bad files dropped; scraped while they are read and once all are done."""
    from conftest import errors

    for i in range(300):
        write(inbox / f"{i:03d}.png", digit_stroke())
    for i in range(5):
        (inbox / f"bad-{i}.png").write_text("not an image")
    during = _get(server.address, "/metrics")
    assert during[0] == 200 and "worker_model_info" in during[1]
    assert wait_for(lambda: (outbox / "predictions.csv").exists() and len(rows(outbox)) == 300
                    and len(errors(outbox)) == 5, 30)
    assert wait_for(lambda: sum(_files_total(_get(server.address, "/metrics")[1]).values()) == 305, 10)


def _get_text_after_stop(metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def test_metrics_file_is_written_from_the_loop_with_every_file_latency(boxes, fake_classifier, tmp_path):
    """--metrics-file: node_exporter's textfile, written when the loop first turns and at the
    stop; the latency histogram has one observation per file dropped (rows and failures)."""
    import re

    from worker.daemon.metrics import Metrics

    inbox, outbox = boxes
    textfile = tmp_path / "worker.prom"
    metrics = Metrics(textfile=textfile)
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=0.1), fake_classifier, metrics=metrics)
    with running(daemon):
        assert wait_for(textfile.exists, 10), "written as the loop starts turning"
        for i in range(20):
            write(inbox / f"{i:02d}.png", digit_stroke())
        (inbox / "bad.png").write_text("not an image")
        assert wait_for(lambda: len(rows(outbox)) == 20, 30)
    text = textfile.read_text()
    assert _files_total(text) == {"row/": 20.0, "failed/not-an-image": 1.0}, "the final counts"
    count = re.search(r"^worker_file_latency_seconds_count (\S+)$", text, re.MULTILINE)
    assert count and float(count.group(1)) == 21.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("worker.prom.")], "no temporary left"
