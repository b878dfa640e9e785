"""worker serve's API: classify, drop into the inbox, follow, review; and what it refuses.
Driven through Starlette's TestClient with the fake classifier; the page itself is driven in a
real browser in test_browser.py."""

from __future__ import annotations

import itertools
import json

import cv2
import pytest
from factories import digit_stroke
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.web.app import ServeSettings, create_app


def png(image=None) -> bytes:
    return cv2.imencode(".png", digit_stroke() if image is None else image)[1].tobytes()


@pytest.fixture
def boxes_for_web(tmp_path):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    return inbox, outbox


def web_settings(boxes, **given) -> ServeSettings:
    """Settings over the test's folders that also take TestClient's own Host, ``testserver``."""
    inbox, outbox = boxes
    given["allowed_hosts"] = ("testserver", *given.get("allowed_hosts", ()))
    return ServeSettings(inbox=inbox, outbox=outbox, **given)


@pytest.fixture
def client(boxes_for_web, fake_classifier):
    app = create_app(web_settings(boxes_for_web, max_bytes=100_000), fake_classifier)
    with TestClient(app) as test_client:
        yield test_client


def test_classify_now_answers_and_keeps_nothing(client, boxes_for_web):
    answer = client.post("/api/classify", files={"file": ("d.png", png(), "image/png")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    digits = [str(d) for d in range(10)]
    assert body["label"] in digits and list(body["probabilities"]) == digits
    assert body["seen"].startswith("data:image/png;base64,")
    assert not list(boxes_for_web[0].iterdir()) and not list(boxes_for_web[1].iterdir())


@pytest.mark.parametrize(("data", "status", "kind"),
                         [(b"not an image", 415, "not-an-image"), (b"", 422, "empty")])
def test_a_bad_upload_gets_a_clear_4xx(client, data, status, kind):
    answer = client.post("/api/classify", files={"file": ("x.png", data, "image/png")})
    assert answer.status_code == status and answer.json()["detail"]["kind"] == kind


def test_an_oversized_upload_is_413(client):
    answer = client.post("/api/inbox", files={"files": ("big.png", b"\0" * 100_001, "image/png")})
    assert answer.status_code == 413


@pytest.mark.parametrize(("given", "kept"), [("../../etc/x.png", "x.png"), ("..\\..\\y.png", "y.png"),
                                             (".hidden.png", "hidden.png"), ("...", "upload")])
def test_no_path_in_a_name_survives_the_drop(client, boxes_for_web, given, kept):
    answer = client.post("/api/inbox", files={"files": (given, png(), "image/png")})
    assert answer.status_code == 201, answer.text
    [upload] = answer.json()["uploads"]
    stem, dot, suffix = kept.rpartition(".")
    assert upload["original"] == kept
    assert upload["name"].startswith(f"{stem or suffix}-")
    assert upload["name"].endswith(f"{dot}{suffix}" if dot else "")
    assert [p.name for p in boxes_for_web[0].iterdir()] == [upload["name"]], "whole, nothing else"


def test_control_characters_never_reach_a_name():
    from worker.web.drop import plain_name

    assert plain_name("a\nb\x00c.png") == "a_b_c.png"
    assert plain_name(None) == plain_name("") == "upload"


def test_a_second_drop_of_one_name_gets_another_name(client, boxes_for_web):
    names = [client.post("/api/inbox", files={"files": ("s.png", png(), "image/png")}).json()["names"][0]
             for _ in range(2)]
    assert names[0] != names[1] and sorted(p.name for p in boxes_for_web[0].iterdir()) == sorted(names)


def test_a_write_from_another_site_is_refused(client):
    answer = client.post("/api/classify", files={"file": ("d.png", png(), "image/png")},
                         headers={"Origin": "http://elsewhere.example"})
    assert answer.status_code == 403
    same = client.post("/api/classify", files={"file": ("d.png", png(), "image/png")},
                       headers={"Origin": "http://testserver"})
    assert same.status_code == 200


def test_with_a_token_every_request_needs_it(boxes_for_web, fake_classifier):
    app = create_app(web_settings(boxes_for_web, token="s3cret"), fake_classifier)
    with TestClient(app) as client:
        assert client.get("/api/model").status_code == 401
        assert client.get("/").status_code == 401
        assert client.get("/?token=wrong").status_code == 401
        assert client.get("/?token=s3cret").status_code == 200
        assert client.get("/api/model").status_code == 200, "the cookie the page set carries it"
    with TestClient(app) as other:
        assert other.get("/api/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_a_review_is_appended_durably_and_checked(client, boxes_for_web):
    from outboxes import outbox_with, row

    written = row("a.png", "7", 0.6)
    outbox_with(boxes_for_web[1].parent, [written])
    decision = {"id": written.id, "file": "a.png", "predicted": "7", "label": "1"}
    assert client.post("/api/reviews", json=decision).status_code == 201
    assert client.post("/api/reviews", json={**decision, "label": "x"}).status_code == 422
    assert client.post("/api/reviews", json={**decision, "id": "../../x"}).status_code == 422
    lines = (boxes_for_web[1] / "reviews.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["label"] == "1"


def test_serve_refuses_an_open_address_without_a_token(tmp_path):
    from typer.testing import CliRunner

    from worker.cli import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--inbox", str(tmp_path)])
    assert result.exit_code == 78 and "--token" in result.output


names = st.text(st.characters(codec="utf-8"), max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=names, data=st.binary(max_size=2000), label=st.text(max_size=20), row_id=st.text(max_size=40),
       query=st.text(max_size=300))
def test_the_api_never_answers_500(boxes_for_web, fake_classifier, name, data, label, row_id, query):
    app = create_app(web_settings(boxes_for_web, max_bytes=1000), fake_classifier)
    decision = {"id": row_id, "file": name, "predicted": "1", "label": label}
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = [
            client.post("/api/classify", files={"file": (name, data, "application/octet-stream")}),
            client.post("/api/inbox", files={"files": (name, data, "image/png")}),
            client.post("/api/reviews", json=decision),
            client.post("/api/reviews", content=data, headers={"Content-Type": "application/json"}),
            client.post("/api/reviews/undo", json=decision),
            client.get("/api/record", params={"name": query}),
            client.get("/api/latest", params={"limit": query}),
            client.get("/api/review", params={"limit": query}),
        ]
    assert all(a.status_code < 500 for a in answers), [(a.request.url, a.status_code) for a in answers]


def test_a_model_not_of_digits_offers_upload_only(boxes_for_web, fake_classifier):
    fake_classifier.card = {"dataset": "fashion-mnist"}
    with TestClient(create_app(web_settings(boxes_for_web), fake_classifier)) as client:
        assert client.get("/api/model").json()["draw"] is False


def test_the_live_numbers_are_the_reports_made_in_the_background(client, boxes_for_web):
    from factories import wait_for
    from outboxes import outbox_with, row

    outbox_with(boxes_for_web[1].parent, [row("a.png", "1", 0.5), row("b.png", "2", 0.99)])
    assert wait_for(lambda: (client.get("/api/latest").json()["report"] or {}).get("predictions") == 2, 10)
    numbers = client.get("/api/latest").json()["report"]
    assert numbers["low_confidence"] == 1 and numbers["labels"] == {"1": 1, "2": 1}


def _tags(monkeypatch, *tags: str) -> None:
    """The random tags ``stored_name`` draws, in this order (other random names as ever)."""
    import secrets

    from worker.web import drop

    given, token_hex = iter(tags), secrets.token_hex
    monkeypatch.setattr(drop.secrets, "token_hex",
                        lambda n: next(given) if n == drop.TAG_BYTES else token_hex(n))


@pytest.mark.parametrize("noreplace", [True, False], ids=["renameat2", "no-renameat2"])
def test_a_drop_never_replaces_a_file_of_its_name(client, boxes_for_web, monkeypatch, noreplace):
    """A file already at the first name drawn (a writer who guessed the tag) is left as it was;
    where the file system has no renameat2 (some network shares) the rename still never
    replaces it."""
    import errno

    from worker.web import drop

    if not noreplace:
        def refused(*args):
            raise OSError(errno.EINVAL, "Invalid argument")

        monkeypatch.setattr(drop, "_renameat2", refused)
    inbox = boxes_for_web[0]
    (inbox / "s-aaaaaaaaaaaa.png").write_bytes(b"theirs")
    _tags(monkeypatch, "aaaaaaaaaaaa", "bbbbbbbbbbbb")
    answer = client.post("/api/inbox", files={"files": ("s.png", png(), "image/png")})
    assert answer.status_code == 201, answer.text
    assert answer.json()["names"] == ["s-bbbbbbbbbbbb.png"]
    assert (inbox / "s-aaaaaaaaaaaa.png").read_bytes() == b"theirs"
    assert (inbox / "s-bbbbbbbbbbbb.png").read_bytes() == png()
    assert sorted(p.name for p in inbox.iterdir()) == ["s-aaaaaaaaaaaa.png", "s-bbbbbbbbbbbb.png"]


def test_a_drop_arrives_as_the_daemon_takes_at_once(client, boxes_for_web):
    """inotify reports the upload as a file moved in whole (or closed), never only as created:
    the daemon's intake, with an hour of quiet time, has it ready as soon as the events come.
    A hard link gave a creation and no close, and the daemon waited out its quiet time."""
    import time

    from factories import wait_for

    from worker.daemon.intake import Intake
    from worker.daemon.settings import Settings

    inbox = boxes_for_web[0]
    intake = Intake(inbox, Settings(inbox=inbox, settle=3600, settle_open=3600), time.time)
    intake.start(time.time(), observe=True)
    try:
        name = client.post("/api/inbox", files={"files": ("d.png", png(), "image/png")}).json()["names"][0]
        ready = []
        assert wait_for(lambda: ready.extend(intake.ready(time.time(), 10)) or ready, 5), "never ready"
    finally:
        intake.stop()
    assert ready == [name]


def test_an_upload_is_followed_by_its_bytes_too(client, boxes_for_web):
    """A row or error record of the upload's name is its own only if of its bytes: one of a file
    put in its place before the daemon took it is said to be of another file."""
    import dataclasses
    import hashlib

    from outboxes import outbox_with, row

    dropped = client.post("/api/inbox", files={"files": ("x.png", png(), "image/png")}).json()["uploads"][0]
    assert dropped["sha256"] == hashlib.sha256(png()).hexdigest()
    name, mine = dropped["name"], dropped["sha256"]
    theirs = hashlib.sha256(b"theirs").hexdigest()
    outbox_with(boxes_for_web[1].parent, [dataclasses.replace(row(name, "7", 0.9), sha256=theirs)])
    def record(sha256: str):
        return client.get("/api/record", params={"name": name, "sha256": sha256})

    assert record(mine).json() == {"other": {"file": name}}
    assert record(theirs).json()["row"]["label"] == "7"
    assert record("x").status_code == 422


def test_an_error_record_is_the_uploads_if_its_input_is(client, boxes_for_web):
    import hashlib

    failed = boxes_for_web[1] / "failed"
    failed.mkdir()
    dropped = client.post("/api/inbox", files={"files": ("x.png", b"not an image", "image/png")}).json()
    name = dropped["names"][0]
    (boxes_for_web[0] / name).rename(failed / name)  # as the daemon quarantines it
    (failed / f"{name}.error.json").write_text(json.dumps({"file": name, "kind": "not-an-image",
                                                          "message": "no image"}))
    mine = dropped["uploads"][0]["sha256"]
    found = client.get("/api/record", params={"name": name, "sha256": mine}).json()
    assert found["error"]["kind"] == "not-an-image"
    (failed / name).write_bytes(b"another file")
    other = client.get("/api/record", params={"name": name, "sha256": mine}).json()
    assert other == {"other": {"file": name}}
    assert hashlib.sha256(b"not an image").hexdigest() == mine


# --- what the API trusts (issue 23, items 6-11) ---------------------------------------------------


@pytest.mark.parametrize("host", ["rebind.attacker.example", "rebind.attacker.example:8000", "",
                                  "127.0.0.1.evil"])
def test_a_host_not_allowed_is_refused_before_anything_else(client, boxes_for_web, host):
    """DNS rebinding: a page whose Host and Origin are both the attacker's name is still refused."""
    same_site = {"Host": host, "Origin": f"http://{host}"}
    answers = [
        client.post("/api/inbox", files={"files": ("x.png", png(), "image/png")}, headers=same_site),
        client.post("/api/reviews", json={"id": "0" * 20, "file": "x.png", "predicted": "1", "label": "1"},
                    headers=same_site),
        client.get("/api/latest", headers=same_site),
        client.get("/", headers=same_site),
    ]
    assert [a.status_code for a in answers] == [421] * 4
    assert not list(boxes_for_web[0].iterdir()) and not (boxes_for_web[1] / "reviews.jsonl").exists()


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST", "digits.lan:8000",
                                  "192.0.2.7:8000"])
def test_loopback_names_the_listening_address_and_allowed_hosts_are_served(boxes_for_web, fake_classifier,
                                                                           host):
    settings = web_settings(boxes_for_web, host="192.0.2.7", allowed_hosts=("digits.lan",), token="s3cret")
    with TestClient(create_app(settings, fake_classifier)) as client:
        answer = client.get("/api/model", headers={"Host": host, "Authorization": "Bearer s3cret"})
    assert answer.status_code == 200, answer.text


def test_allowed_hosts_are_named_not_patterns():
    from worker.web.guard import host_allowed

    allowed = frozenset({"localhost", "digits.lan"})
    assert host_allowed("digits.lan:80", allowed) and host_allowed("Digits.LAN", allowed)
    for refused in (None, "", "evil.digits.lan", "digits.lan.evil", "localhost:80@evil", "[::1", "a b"):
        assert not host_allowed(refused, allowed), refused


def test_serve_on_every_address_needs_the_names_clients_use(tmp_path):
    from typer.testing import CliRunner

    from worker.cli import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--token", "s3cret",
                                      "--inbox", str(tmp_path)])
    assert result.exit_code == 78 and "--allowed-host" in result.output


def test_a_guess_of_the_token_outside_ascii_is_401(boxes_for_web, fake_classifier):
    app = create_app(web_settings(boxes_for_web, token="s3cret"), fake_classifier)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/api/model", params={"token": "sécret"}).status_code == 401
        for header in ({"Authorization": "Bearer sécret".encode()},
                       {"Cookie": "worker_token=sécret".encode()}):
            assert client.get("/api/model", headers=header).status_code == 401


@pytest.mark.parametrize("token", ["sécret", "two words", "semi;colon", ""])
def test_a_token_that_cannot_travel_is_a_configuration_error(boxes_for_web, token):
    from worker.errors import ConfigError

    with pytest.raises(ConfigError, match="--token"):
        web_settings(boxes_for_web, token=token)


def test_serve_says_which_token_it_cannot_use(tmp_path):
    from typer.testing import CliRunner

    from worker.cli import app

    result = CliRunner().invoke(app, ["serve", "--token", "sécret", "--inbox", str(tmp_path),
                                      "--model", str(tmp_path / "none.keras")])
    assert result.exit_code == 78 and "--token" in result.output, result.output


@pytest.mark.parametrize("name", ["/x", "/etc/passwd", "../x.png", "a/b.png", ".work", "*", "x.png\0"])
def test_a_name_no_upload_is_given_is_refused_not_globbed(client, boxes_for_web, name):
    (boxes_for_web[1] / "failed").mkdir()
    answer = client.get("/api/record", params={"name": name})
    assert answer.status_code == 422, answer.text


def test_an_upload_is_followed_by_its_own_name_not_an_older_row(client, boxes_for_web):
    from outboxes import outbox_with, row

    inbox = boxes_for_web[0]
    first = client.post("/api/inbox", files={"files": ("x.png", png(), "image/png")}).json()["names"][0]
    (inbox / first).unlink()  # the daemon took it, and wrote its row
    outbox_with(boxes_for_web[1].parent, [row(first, "7", 0.9)])
    second = client.post("/api/inbox", files={"files": ("x.png", png(), "image/png")}).json()["names"][0]
    assert client.get("/api/record", params={"name": first}).json()["row"]["label"] == "7"
    assert client.get("/api/record", params={"name": second}).json() == {"waiting": True}


@pytest.mark.parametrize("given", ["scan.tmp", "scan.png.part", "Thumbs.db", "scan.png.crdownload",
                                   ".scan.png", "scan.png~", "desktop.ini", "scan.swp", ".DS_Store",
                                   "~$scan.png", ".~$scan.png", "scan.png.download", "scan.png.filepart"])
def test_an_upload_is_stored_under_a_name_the_daemon_takes(client, boxes_for_web, given):
    from worker.daemon.watch import is_ignored

    answer = client.post("/api/inbox", files={"files": (given, png(), "image/png")})
    assert answer.status_code == 201, answer.text
    [upload] = answer.json()["uploads"]
    assert not is_ignored(upload["name"]) and upload["original"] == given.lstrip(".").removeprefix("~$")
    assert [p.name for p in boxes_for_web[0].iterdir()] == [upload["name"]]


def test_a_review_of_a_row_the_outbox_has_not_is_404(client, boxes_for_web):
    from outboxes import outbox_with, row

    written = row("a.png", "7", 0.6)
    outbox_with(boxes_for_web[1].parent, [written])
    unknown = {"id": "0123456789abcdef0123", "file": "a.png", "predicted": "7", "label": "1"}
    assert client.post("/api/reviews", json=unknown).status_code == 404
    paged = {**unknown, "id": f"{written.id}#2"}
    assert client.post("/api/reviews", json=paged).status_code == 404
    assert not (boxes_for_web[1] / "reviews.jsonl").exists()


@pytest.mark.parametrize(("file", "predicted"), [("b.png", "7"), ("a.png#2", "7"), ("a.png", "3")])
def test_a_review_must_say_what_its_row_says(client, boxes_for_web, file, predicted):
    from outboxes import outbox_with, row

    written = row("a.png", "7", 0.6)
    outbox_with(boxes_for_web[1].parent, [written])
    decision = {"id": written.id, "file": file, "predicted": predicted, "label": "1"}
    assert client.post("/api/reviews", json=decision).status_code == 422
    assert not (boxes_for_web[1] / "reviews.jsonl").exists()


def test_a_review_of_a_row_far_from_the_end_is_found(boxes_for_web, fake_classifier, monkeypatch):
    from outboxes import outbox_with, row

    from worker.web import outbox_view

    monkeypatch.setattr(outbox_view, "TAIL_BYTES", 2000)
    rows = [row(f"{n}.png", "7", 0.6) for n in range(50)]
    outbox_with(boxes_for_web[1].parent, rows)
    with TestClient(create_app(web_settings(boxes_for_web), fake_classifier)) as client:
        decision = {"id": rows[0].id, "file": "0.png", "predicted": "7", "label": "1"}
        assert client.post("/api/reviews", json=decision).status_code == 201


# --- bodies are capped before they are read ---------------------------------------------------------


@pytest.fixture
def served(boxes_for_web, fake_classifier):
    """The app on uvicorn on a free loopback port (a thread), as ``worker serve`` runs it;
    yields (host, port)."""
    import threading

    import uvicorn
    from factories import wait_for
    from services import free_port

    port = free_port()
    app = create_app(web_settings(boxes_for_web, max_bytes=100_000), fake_classifier)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, 20)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(10)


def _answer_to_a_big_body(address, path: str, headers: str, chunks) -> tuple[bytes, int]:
    """Send a request's head, then body chunks until the server answers or closes; returns
    (the answer's first bytes, body bytes sent)."""
    import select
    import socket

    sent = 0
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        try:
            return sock.recv(200), sent
        except (TimeoutError, ConnectionResetError):
            return b"", sent


@pytest.mark.parametrize("path", ["/api/reviews", "/api/inbox", "/api/classify"])
def test_a_declared_huge_body_is_refused_before_it_is_sent(served, path):
    answer, sent = _answer_to_a_big_body(served, path, "Content-Type: application/json\r\n"
                                         f"Content-Length: {300 * 2**20}\r\n", [])
    assert answer.startswith(b"HTTP/1.1 413"), answer


@pytest.mark.parametrize(("path", "kind"), [("/api/reviews", "application/json"),
                                            ("/api/inbox", "multipart/form-data; boundary=b")])
def test_a_streamed_huge_body_is_refused_while_it_comes(served, path, kind):
    """Chunked, without a length: the server stops reading it soon after the cap."""
    def framed(chunk: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(chunk), chunk)

    part = b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n\r\n'
    head = f"Content-Type: {kind}\r\nTransfer-Encoding: chunked\r\n"
    body = itertools.chain([framed(part if "multipart" in kind else b"[")],
                           (framed(b"0" * 2**16) for _ in range(300 * 2**4)))
    answer, sent = _answer_to_a_big_body(served, path, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert sent < 32 * 2**20, "the server stopped reading long before the end"


# --- review: who, when, and undo (issue 27, item 2) ---------------------------------------------------


@pytest.fixture
def reviewed_row(boxes_for_web, fake_classifier):
    """A client whose decisions are recorded as ``ana``, and a row of its outbox."""
    from outboxes import outbox_with, row

    written = row("a.png", "7", 0.6)
    outbox_with(boxes_for_web[1].parent, [written])
    with TestClient(create_app(web_settings(boxes_for_web, reviewer="ana"), fake_classifier)) as client:
        yield client, {"id": written.id, "file": "a.png", "predicted": "7"}


def _lines(outbox) -> list[dict]:
    return [json.loads(line) for line in (outbox / "reviews.jsonl").read_text().splitlines()]


def test_a_decision_says_who_and_when(reviewed_row, boxes_for_web):
    client, row = reviewed_row
    answer = client.post("/api/reviews", json={**row, "label": "1"})
    assert answer.status_code == 201, answer.text
    [line] = _lines(boxes_for_web[1])
    assert line["reviewer"] == "ana" and line["time"].endswith("Z") and line["label"] == "1"
    assert client.get("/api/model").json()["reviewer"] == "ana"


def test_an_undone_decision_puts_the_row_back_in_the_queue(reviewed_row, boxes_for_web):
    from worker.outbox.reviews import read_decisions

    client, row = reviewed_row
    outbox = boxes_for_web[1]
    assert client.post("/api/reviews", json={**row, "label": "1"}).status_code == 201
    assert client.get("/api/review").json()["rows"] == []
    undone = client.post("/api/reviews/undo", json={**row, "label": "7"})
    assert undone.status_code == 409, "not the one standing"
    assert client.post("/api/reviews/undo", json={**row, "label": "1"}).status_code == 201
    assert [r["id"] for r in client.get("/api/review").json()["rows"]] == [row["id"]]
    assert read_decisions(outbox).by_row == {}
    assert client.post("/api/reviews/undo", json={**row, "label": "1"}).status_code == 409, "nothing left"
    assert _lines(outbox)[1] == {**row, "undone": "1", "time": _lines(outbox)[1]["time"], "reviewer": "ana"}
    assert len(_lines(outbox)) == 2


def test_an_undo_of_a_row_the_outbox_has_not_is_404(reviewed_row):
    client, row = reviewed_row
    assert client.post("/api/reviews/undo", json={**row, "id": "0" * 20, "label": "1"}).status_code == 404


def test_undo_lines_take_back_the_last_decision_standing_only(tmp_path):
    """An earlier decision stands again once a later one is undone; an undo naming another
    label than the one standing takes nothing back and is counted as no decision; lines of
    older pages (no reviewer) read as ever."""
    from worker.outbox.reviews import read_decisions

    row_id = "0123456789abcdef0123"
    at = "2026-12-01T10:00:00.000Z"
    lines = [{"id": row_id, "label": "1", "file": "a.png", "predicted": "7", "time": at},
             {"id": row_id, "label": "2", "reviewer": "bo"},
             {"id": row_id, "undone": "9"},
             {"id": row_id, "undone": "2", "reviewer": "bo"}]
    (tmp_path / "reviews.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    decisions = read_decisions(tmp_path)
    standing = decisions.by_row[row_id]
    assert (standing.label, standing.file, standing.reviewer, decisions.bad) == ("1", "a.png", None, 1)


def test_a_reviewer_name_with_control_characters_is_refused(boxes_for_web):
    from worker.errors import ConfigError

    for bad in ("", "a\nb", " ana", "x" * 101):
        with pytest.raises(ConfigError, match="--reviewer"):
            web_settings(boxes_for_web, reviewer=bad)


def test_the_api_reference_and_the_icon_are_served_from_the_package(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/api.js" in docs.text
    assert "cdn" not in docs.text.lower() and "//" not in docs.text.replace("http://www.w3.org", "")
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")


def test_serve_says_which_reviewer_name_it_cannot_use(tmp_path):
    from typer.testing import CliRunner

    from worker.cli import app

    result = CliRunner().invoke(app, ["serve", "--reviewer", "a\tb", "--inbox", str(tmp_path),
                                      "--model", str(tmp_path / "none.keras")])
    assert result.exit_code == 78 and "--reviewer" in result.output, result.output


def test_the_pages_report_workers_come_from_a_forkserver_not_a_fork(client, boxes_for_web, monkeypatch):
    """The live numbers are made on a thread beside uvicorn's: forking there could deadlock a
    worker on a lock another thread held. They come from a forkserver, say what the CLI's
    forked workers say, and end at the pool's SIGTERM whatever the parent's handler is."""
    import multiprocessing
    import signal

    from factories import wait_for
    from outboxes import outbox_with, row

    from worker.report import build_report, parallel

    rows = [row(f"{i % 10}/{i:03d}.png", str(i * 7 % 10), 0.5 + i % 50 / 100) for i in range(300)]
    outbox = outbox_with(boxes_for_web[1].parent, rows)
    monkeypatch.setattr(parallel, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    methods, real_context = [], multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None: methods.append(method)
                        or real_context(method))
    forked = build_report(outbox)
    assert methods == ["fork"], "the CLI's report forks its workers"
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # as uvicorn's: a flag
    try:
        assert wait_for(lambda: client.get("/api/latest").json()["report"] is not None, 60)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert methods == ["fork", "forkserver"]
    numbers = client.get("/api/latest").json()["report"]
    assert "error" not in numbers, numbers
    assert numbers == {key: forked[key] for key in numbers}
    assert numbers["predictions"] == 300
