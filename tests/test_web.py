"""worker serve's API: classify, drop into the inbox, follow, review; and what it refuses.
Driven through Starlette's TestClient with the fake classifier; the page itself is driven in a
real browser in test_browser.py."""

from __future__ import annotations

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


@pytest.fixture
def client(boxes_for_web, fake_classifier):
    inbox, outbox = boxes_for_web
    app = create_app(ServeSettings(inbox=inbox, outbox=outbox, max_bytes=100_000), fake_classifier)
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
    assert answer.json()["names"] == [kept]
    assert [p.name for p in boxes_for_web[0].iterdir()] == [kept], "whole, under its plain name, nothing else"


def test_control_characters_never_reach_a_name():
    from worker.web.app import _plain_name

    assert _plain_name("a\nb\x00c.png") == "a_b_c.png"
    assert _plain_name(None) == _plain_name("") == "upload"


def test_a_second_drop_of_one_name_gets_another_name(client, boxes_for_web):
    for _ in range(2):
        client.post("/api/inbox", files={"files": ("s.png", png(), "image/png")})
    assert sorted(p.name for p in boxes_for_web[0].iterdir()) == ["s-1.png", "s.png"]


def test_a_write_from_another_site_is_refused(client):
    answer = client.post("/api/classify", files={"file": ("d.png", png(), "image/png")},
                         headers={"Origin": "http://elsewhere.example"})
    assert answer.status_code == 403
    same = client.post("/api/classify", files={"file": ("d.png", png(), "image/png")},
                       headers={"Origin": "http://testserver"})
    assert same.status_code == 200


def test_with_a_token_every_request_needs_it(boxes_for_web, fake_classifier):
    inbox, outbox = boxes_for_web
    app = create_app(ServeSettings(inbox=inbox, outbox=outbox, token="s3cret"), fake_classifier)
    with TestClient(app) as client:
        assert client.get("/api/model").status_code == 401
        assert client.get("/").status_code == 401
        assert client.get("/?token=wrong").status_code == 401
        assert client.get("/?token=s3cret").status_code == 200
        assert client.get("/api/model").status_code == 200, "the cookie the page set carries it"
    with TestClient(app) as other:
        assert other.get("/api/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_a_review_is_appended_durably_and_checked(client, boxes_for_web):
    decision = {"id": "0123456789abcdef0123", "file": "a.png", "predicted": "7", "label": "1"}
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
    inbox, outbox = boxes_for_web
    app = create_app(ServeSettings(inbox=inbox, outbox=outbox, max_bytes=1000), fake_classifier)
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = [
            client.post("/api/classify", files={"file": (name, data, "application/octet-stream")}),
            client.post("/api/inbox", files={"files": (name, data, "image/png")}),
            client.post("/api/reviews", json={"id": row_id, "file": name, "predicted": "1", "label": label}),
            client.post("/api/reviews", content=data, headers={"Content-Type": "application/json"}),
            client.get("/api/record", params={"name": query}),
            client.get("/api/latest", params={"limit": query}),
            client.get("/api/review", params={"limit": query}),
        ]
    assert all(a.status_code < 500 for a in answers), [(a.request.url, a.status_code) for a in answers]


def test_a_model_not_of_digits_offers_upload_only(boxes_for_web, fake_classifier):
    inbox, outbox = boxes_for_web
    fake_classifier.card = {"dataset": "fashion-mnist"}
    with TestClient(create_app(ServeSettings(inbox=inbox, outbox=outbox), fake_classifier)) as client:
        assert client.get("/api/model").json()["draw"] is False


def test_the_live_numbers_are_the_reports_made_in_the_background(client, boxes_for_web):
    from factories import wait_for
    from test_report import outbox_with, row

    outbox_with(boxes_for_web[1].parent, [row("a.png", "1", 0.5), row("b.png", "2", 0.99)])
    assert wait_for(lambda: (client.get("/api/latest").json()["report"] or {}).get("predictions") == 2, 10)
    numbers = client.get("/api/latest").json()["report"]
    assert numbers["low_confidence"] == 1 and numbers["labels"] == {"1": 1, "2": 1}


def test_an_inbox_without_hard_links_still_takes_a_drop(client, boxes_for_web, monkeypatch):
    import errno
    import os

    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    answer = client.post("/api/inbox", files={"files": ("s.png", png(), "image/png")})
    assert answer.status_code == 201 and [p.name for p in boxes_for_web[0].iterdir()] == ["s.png"]
