"""``GET /api/events`` on a real server (uvicorn on a free loopback port): a page is told when the
outbox changes; streams are capped (503 beyond), let go when their client goes, and end on
their own; the token guards them like every request."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from contextlib import contextmanager

import pytest
from factories import wait_for
from services import free_port
from test_live import decide, write_rows

from worker.web.app import ServeSettings, create_app
from worker.web.events import MAX_STREAMS, STREAM_SECONDS, EventStreams
from worker.web.live import LiveOutbox


@contextmanager
def served(tmp_path, classifier, **settings):
    """``worker serve``'s app on uvicorn (a thread); yields (port, outbox)."""
    import uvicorn

    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    port = free_port()
    app = create_app(ServeSettings(inbox=inbox, outbox=outbox, **settings), classifier)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, 20)
    try:
        yield port, outbox
    finally:
        server.should_exit = True
        thread.join(10)


def open_stream(port: int, headers: str = "") -> tuple[socket.socket, bytes]:
    """A GET /api/events on a socket of its own, left open; (the socket, what came until the
    first event or the end of an error's body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
    got = b""
    while piece := sock.recv(4096):
        got += piece
        head, ended, body = got.partition(b"\r\n\r\n")
        if ended and (not head.startswith(b"HTTP/1.1 200 ") or b"\n\n" in body):
            break
    return sock, got


def event_until(lines, wanted) -> dict:
    """The data of the first ``versions`` event on an httpx stream's lines that ``wanted``
    takes (the folders' status changes the versions too)."""
    for text in lines:
        if text.startswith("data: ") and wanted(data := json.loads(text[len("data: "):])):
            return data
    raise AssertionError("the stream ended")


def test_a_page_is_told_when_rows_and_decisions_arrive(tmp_path, fake_classifier):
    import httpx

    with served(tmp_path, fake_classifier) as (port, outbox), httpx.Client(timeout=10) as client:
        with client.stream("GET", f"http://127.0.0.1:{port}/api/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            first = event_until(lines, lambda _: True)
            write_rows(outbox, range(3))
            after_rows = event_until(lines, lambda v: v["review"] > first["review"])
            assert after_rows["latest"] > first["latest"]
            decide(outbox, 0)
            event_until(lines, lambda v: v["review"] > after_rows["review"])
        rows = client.get(f"http://127.0.0.1:{port}/api/review").json()["rows"]
        assert {r["file"] for r in rows} == {"scan-1.png", "scan-2.png"}


def test_streams_beyond_the_cap_are_503_and_a_closed_one_frees_its_place(tmp_path, fake_classifier):
    with served(tmp_path, fake_classifier) as (port, _):
        held = [open_stream(port) for _ in range(MAX_STREAMS)]
        try:
            assert all(b" 200 " in got.split(b"\r\n")[0] and b"event: versions" in got for _, got in held)
            sock, refused = open_stream(port)
            sock.close()
            assert refused.startswith(b"HTTP/1.1 503 ") and b"retry-after: 30" in refused.lower()
            held.pop()[0].close()  # a tab closed: its place is free again, at once

            def one_more_opens() -> bool:
                sock, got = open_stream(port)
                held.append((sock, got))
                return got.startswith(b"HTTP/1.1 200 ")

            assert wait_for(one_more_opens, 10, interval=0.2)
        finally:
            for sock, _ in held:
                sock.close()


def test_a_stream_needs_the_token(tmp_path, fake_classifier):
    with served(tmp_path, fake_classifier, token="s3cret") as (port, _):
        sock, got = open_stream(port)
        sock.close()
        assert got.startswith(b"HTTP/1.1 401 ")
        sock, got = open_stream(port, "Authorization: Bearer s3cret\r\n")
        sock.close()
        assert got.startswith(b"HTTP/1.1 200 ")


def test_a_stream_ends_on_its_own_and_its_ticker_stops(tmp_path):
    """A stream lives ``lifetime``; once none is open, nothing looks at the files."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    streams = EventStreams(LiveOutbox(inbox, outbox), tick=0.02, lifetime=0.5)

    async def one_stream() -> list:
        slot = streams.slot()
        await slot.__anext__()
        got = []
        async for event in streams.stream():
            got.append(event.data)
            if len(got) == 1:
                write_rows(outbox, range(2))
        with pytest.raises(StopAsyncIteration):
            await slot.__anext__()
        await asyncio.wait_for(streams.ticker, 2)
        return got

    got = asyncio.run(one_stream())
    assert got[-1]["review"] > got[0]["review"], "the rows written were told"
    assert streams.open == 0 and streams.ticker.done()


def test_a_stop_signal_ends_the_open_streams_and_the_server(tmp_path):
    """``worker serve`` with a page's stream open: SIGTERM ends the stream and the process at
    once, as with no page open (uvicorn waits for every response to finish: a stream's lasts
    minutes)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    from worker import defaults

    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    port = free_port()
    command = ["serve", "--port", str(port), "--inbox", str(inbox), "--outbox", str(outbox),
               "--model", str(defaults.MODELS_DIR / "mnist.keras")]
    serve = subprocess.Popen([sys.executable, "-m", "worker", *command],
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: _answers(port) or serve.poll() is not None, 60) and serve.poll() is None
        sock, got = open_stream(port)
        assert got.startswith(b"HTTP/1.1 200 ")
        sock.settimeout(STREAM_SECONDS + 30)  # a stream that outlives the stop fails the test
        asked = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        while sock.recv(4096):  # the stream ends (its last chunk, then the connection's close)
            pass
        serve.wait(STREAM_SECONDS + 30)
        took = time.monotonic() - asked
        sock.close()
    finally:
        serve.kill()
        serve.wait()
        serve.stderr.close()
    assert took < STREAM_SECONDS, f"{took:.1f} s from SIGTERM to the end: the stream lived out its life"


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
