"""``worker serve``: the web page (draw a digit, upload, the live outbox, review) and its API.

FastAPI, for typed requests and an OpenAPI schema (which the tests fuzz). The model runs in
this process behind a lock (LiteRT's interpreter serves one call at a time); everything else
is read from the inbox and outbox folders, as ``worker status`` reads them.

Safe by default: it listens on 127.0.0.1; on any other address a token is required (the
command refuses to start without one), and then every request must carry it (the page is
opened once with ``?token=...``, which sets a same-site cookie). Requests that change anything
(an upload, a review) are refused when they come from another site (``Origin``). Before all of
that, ``guard.HostGate`` answers only to Host names of ours, and every body is capped as it
arrives (FastAPI's ``max_body_size``; see ``guard``).

Uploads arrive in the inbox whole, by a rename the daemon takes at once, under a name of their
own (``drop``): the page follows each to its row by that name and its bytes' sha256, never by
a name an older file had. A review must name a row of the outbox, with that row's file and label.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.sse import EventSourceResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from worker.errors import InputError
from worker.model.classifier import Classifier, Prediction
from worker.outbox.reviews import ROW_ID, append_review, undo_review
from worker.preprocess import DEFAULT_LIMITS, load_bytes
from worker.report.thumbnails import Thumbnails, seen_uri
from worker.web import drop as inbox_drop
from worker.web import outbox_view
from worker.web.drop import is_stored_name, plain_name
from worker.web.events import EventStreams
from worker.web.guard import (
    JSON_MAX_BYTES,
    TOKEN_COOKIE,
    HostGate,
    carries,
    check_reviewer,
    check_token,
    served_names,
    token_given,
    upload_body_cap,
)
from worker.web.live import MOST_ROWS, LiveOutbox
from worker.web.search_api import add_search_routes

STATIC = Path(__file__).parent / "static"
THUMBNAILS_KEPT = 2000
# The report's numbers on the live page are made again at most this often, on a thread of their
# own: on a million-row outbox a report takes seconds, and a poll must not wait for it.
REPORT_SECONDS = 60.0


@dataclass(frozen=True)
class ServeSettings:
    inbox: Path
    outbox: Path
    token: str | None = None
    max_bytes: int = DEFAULT_LIMITS.max_bytes
    host: str = "127.0.0.1"  # the address listened on: the page may be opened by it
    allowed_hosts: tuple[str, ...] = ()  # more Host names the page may be opened by
    reviewer: str | None = None  # who the page's decisions are recorded as

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token)
        if self.reviewer is not None:
            check_reviewer(self.reviewer)


class Decision(BaseModel):
    id: str = Field(pattern=f"^{ROW_ID.pattern}$", max_length=30)
    file: str = Field(max_length=4096)
    predicted: str = Field(max_length=100)
    label: str = Field(max_length=100)

    def fields(self) -> dict:
        """As ``append_review`` and ``undo_review`` take them."""
        return {"row_id": self.id, "file": self.file, "predicted": self.predicted, "label": self.label}


def create_app(settings: ServeSettings, classifier: Classifier) -> FastAPI:
    # /docs is a page of ours (static/api.html), not Swagger UI: that comes from a CDN.
    app = FastAPI(title="worker", summary="Classify drawings and uploads; follow and review the outbox.",
                  max_body_size=JSON_MAX_BYTES, docs_url=None, redoc_url=None)
    upload_cap = upload_body_cap(settings.max_bytes)
    model = _Model(classifier, settings.reviewer)
    pictures = _Pictures(settings.outbox)
    numbers = _ReportNumbers(settings.outbox)
    live = LiveOutbox(settings.inbox, settings.outbox)
    streams = EventStreams(live)
    app.state.event_streams = streams  # for the server, which ends them when it stops
    _guard(app, settings.token)
    # Added last, so the first a request meets.
    app.add_middleware(HostGate, names=served_names(settings.host, settings.allowed_hosts))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "api.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def icon() -> FileResponse:
        return FileResponse(STATIC / "icon.svg", media_type="image/svg+xml")

    @app.get("/api/model")
    def model_info() -> dict:
        return model.info()

    @app.post("/api/classify", max_body_size=upload_cap)
    def classify(file: Annotated[UploadFile, File()]) -> dict:
        """Classify one image now (a drawing, or a file): nothing is written anywhere."""
        return model.classify(_read_upload(file, settings.max_bytes), plain_name(file.filename))

    @app.post("/api/inbox", status_code=201, max_body_size=upload_cap)
    def drop(files: Annotated[list[UploadFile], File()]) -> dict:
        """Put each file whole into the inbox, for the daemon, under a name of its own;
        returns those names (``names``) and, for each, the name it came with and its sha256."""
        uploads = []
        for file in files:
            original = plain_name(file.filename)
            dropped = inbox_drop.drop(settings.inbox, original, _read_upload(file, settings.max_bytes))
            uploads.append({"original": original, **dropped})
        return {"names": [u["name"] for u in uploads], "uploads": uploads}

    @app.get("/api/record")
    def record(name: str = Query(max_length=255),
               sha256: str | None = Query(None, pattern="^[0-9a-f]{64}$")) -> dict:
        """An upload's row or error record, once the daemon has written it, by the name the
        upload was given (which no earlier file had) and, given its sha256, only if of those
        bytes: a record of that name of other bytes is ``{"other": ...}``."""
        if not is_stored_name(name):
            raise HTTPException(422, f"{name!r} is not a name an upload was given")
        found = outbox_view.record_of(settings.outbox, name, sha256, largest=settings.max_bytes)
        if found and "row" in found:
            found["row"] = pictures.with_picture(outbox_view.brief_row(found["row"]), model.classes)
        return found or {"waiting": True}

    @app.get("/api/latest")
    def latest(limit: int = Query(24, ge=1, le=MOST_ROWS)) -> dict:
        versions = live.look()
        shown = live.latest(limit)
        return {**shown, "rows": [pictures.with_picture(r, model.classes) for r in shown["rows"]],
                "report": numbers.latest(), "versions": versions}

    @app.get("/api/review")
    def review(limit: int = Query(24, ge=1, le=MOST_ROWS)) -> dict:
        versions = live.look()
        return {"rows": [pictures.with_picture(r, model.classes) for r in live.review(limit)],
                "versions": versions}

    @app.get("/api/events", response_class=EventSourceResponse, dependencies=[Depends(streams.slot)])
    async def events():
        """Server-Sent Events: ``versions`` (``{"latest": n, "review": m}``) at once, then
        whenever one changes; fetch /api/latest or /api/review then. 503 when too many
        streams are open; a stream ends after a while, and the browser opens another."""
        async for event in streams.stream():
            yield event

    @app.post("/api/reviews", status_code=201)
    def decide(decision: Decision) -> dict:
        """A person's decision on a row of the outbox: appended to reviews.jsonl, durably, with
        who (``--reviewer``) and when."""
        if decision.label not in model.classes:
            raise HTTPException(422, f"{decision.label!r} is not one of the model's classes")
        _check_against_row(settings.outbox, decision)
        return append_review(settings.outbox, **decision.fields(), at=time.time(), reviewer=settings.reviewer)

    @app.post("/api/reviews/undo", status_code=201)
    def undo(decision: Decision) -> dict:
        """Take back the decision standing on a row, which gave ``label``: a line of its own
        (``undone``) in reviews.jsonl; the row goes back to the review queue. 409 if the row's
        decision standing is none, or another (someone decided on it since)."""
        _check_against_row(settings.outbox, decision)
        undone = undo_review(settings.outbox, **decision.fields(), at=time.time(), reviewer=settings.reviewer)
        if undone is None:
            raise HTTPException(409, f"row {decision.id} has no decision {decision.label!r} standing to undo")
        return undone

    add_search_routes(app, settings.outbox, model.classes, pictures.with_picture)
    return app


class _Model:
    def __init__(self, classifier: Classifier, reviewer: str | None) -> None:
        self.classifier = classifier
        self.reviewer = reviewer
        self.classes = list(classifier.class_names)
        self.lock = threading.Lock()

    def info(self) -> dict:
        card = self.classifier.card
        return {"name": self.classifier.name, "version": self.classifier.version,
                "dataset": card.get("dataset"), "classes": self.classes,
                "draw": card.get("dataset") == "mnist", "reviewer": self.reviewer}

    def classify(self, data: bytes, name: str) -> dict:
        try:
            loaded = load_bytes(data, self.classifier.profile, name=name)
        except InputError as exc:
            raise HTTPException(415 if exc.kind in ("not-an-image", "unsupported") else 422,
                                {"kind": exc.kind, "message": exc.message}) from None
        with self.lock:
            predictions = self.classifier.predictions(self.classifier.predict(np.stack(loaded.inputs)))
        pages = [dict(page=number, **self._result(p)) for (number, _), p in
                 zip(loaded.pages or [(None, None)], predictions, strict=True)]
        return {**pages[0], "seen": seen_uri(loaded.pixels), "pages": pages if loaded.pages else []}

    def _result(self, prediction: Prediction) -> dict:
        return {"label": prediction.label, "confidence": round(prediction.confidence, 6),
                "review": prediction.review, "review_score": prediction.review_score,
                "probabilities": dict(zip(self.classes, prediction.probabilities, strict=True))}


class _Pictures:
    """Thumbnails of archived inputs by row id, the most recent kept in memory."""

    def __init__(self, outbox: Path) -> None:
        self.thumbnails = Thumbnails(outbox)
        self.kept: OrderedDict[str, dict | None] = OrderedDict()
        self.lock = threading.Lock()

    def with_picture(self, row: dict, classes: list[str]) -> dict:
        with self.lock:
            if row["id"] not in self.kept:
                self.kept[row["id"]] = self.thumbnails.of(row, classes)
                if len(self.kept) > THUMBNAILS_KEPT:
                    self.kept.popitem(last=False)
            return {**row, "picture": self.kept[row["id"]]}


class _ReportNumbers:
    """``worker report``'s totals, made again in the background once they are older than
    ``REPORT_SECONDS``; until the first are made, None."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.numbers: dict | None = None
        self.made = float("-inf")
        self.lock = threading.Lock()
        self.making = False

    def latest(self) -> dict | None:
        with self.lock:
            if not self.making and time.monotonic() - self.made >= REPORT_SECONDS:
                self.making = True
                threading.Thread(target=self._make, name="report-numbers", daemon=True).start()
            return self.numbers

    def _make(self) -> None:
        from worker.report import FROM_THREADS, build_report

        try:  # on a thread beside uvicorn's: the report's workers must not be forked from here
            report = build_report(self.outbox, start_method=FROM_THREADS)
            numbers = {key: report[key] for key in ("predictions", "failed", "low_confidence",
                                                    "low_confidence_threshold", "labels", "first", "last")}
        except Exception as exc:  # noqa: BLE001 - the numbers are a nicety; the page goes on without them
            numbers = {"error": str(exc)}
        with self.lock:
            self.numbers, self.made, self.making = numbers, time.monotonic(), False


def _read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, f"over the {max_bytes:,}-byte limit")
    return data


def _check_against_row(outbox: Path, decision: Decision) -> None:
    """404 unless the outbox has the row the decision names; 422 unless its file and predicted
    label are that row's."""
    row = outbox_view.row_by_id(outbox, decision.id)
    if row is None:
        raise HTTPException(404, f"the outbox has no row {decision.id}")
    if (row.get("file"), row.get("label")) != (decision.file, decision.predicted):
        raise HTTPException(422, f"row {decision.id} is {row.get('file')!r}, predicted {row.get('label')!r}")


def _guard(app: FastAPI, token: str | None) -> None:
    @app.middleware("http")
    async def check(request: Request, call_next):
        if token is not None and not carries(token_given(request), token):
            return JSONResponse({"detail": "a token is needed (open the page with ?token=...)"}, 401)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_site(request):
            return JSONResponse({"detail": "refused: this request comes from another site"}, 403)
        response = await call_next(request)
        if token is not None and request.query_params.get("token") == token:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response


def _same_site(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
    return urlsplit(origin).netloc == request.headers.get("host")
