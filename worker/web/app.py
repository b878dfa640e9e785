"""``worker serve``: the web page (draw a digit, upload, the live outbox, review) and its API.

FastAPI, for typed requests and an OpenAPI schema (which the tests fuzz). The model runs in
this process behind a lock (LiteRT's interpreter serves one call at a time); everything else
is read from the inbox and outbox folders, as ``worker status`` reads them.

Safe by default: it listens on 127.0.0.1; on any other address a token is required (the
command refuses to start without one), and then every request must carry it (the page is
opened once with ``?token=...``, which sets a same-site cookie). Requests that change anything
(an upload, a review) are refused when they come from another site (``Origin``).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from worker.errors import InputError
from worker.model import Classifier, Prediction
from worker.preprocess import DEFAULT_LIMITS, load_bytes
from worker.report.thumbnails import Thumbnails, seen_uri
from worker.reviews import ROW_ID, append_review
from worker.status import status as folder_status
from worker.web import outbox_view

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "worker_token"
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


class Decision(BaseModel):
    id: str = Field(pattern=ROW_ID.pattern, max_length=30)
    file: str = Field(max_length=4096)
    predicted: str = Field(max_length=100)
    label: str = Field(max_length=100)


def create_app(settings: ServeSettings, classifier: Classifier) -> FastAPI:
    app = FastAPI(title="worker", summary="Classify drawings and uploads; follow and review the outbox.")
    model = _Model(classifier)
    pictures = _Pictures(settings.outbox)
    numbers = _ReportNumbers(settings.outbox)
    _guard(app, settings.token)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/model")
    def model_info() -> dict:
        return model.info()

    @app.post("/api/classify")
    def classify(file: Annotated[UploadFile, File()]) -> dict:
        """Classify one image now (a drawing, or a file): nothing is written anywhere."""
        return model.classify(_read_upload(file, settings.max_bytes), _plain_name(file.filename))

    @app.post("/api/inbox", status_code=201)
    def drop(files: Annotated[list[UploadFile], File()]) -> dict:
        """Write each file whole into the inbox, for the daemon; returns the names given."""
        return {"names": [_drop(settings.inbox, _plain_name(f.filename), _read_upload(f, settings.max_bytes))
                          for f in files]}

    @app.get("/api/record")
    def record(name: str = Query(max_length=255)) -> dict:
        """A dropped file's row or error record, once the daemon has written it."""
        found = outbox_view.record_of(settings.outbox, name)
        if found and "row" in found:
            found["row"] = pictures.with_picture(outbox_view.brief_row(found["row"]), model.classes)
        return found or {"waiting": True}

    @app.get("/api/latest")
    def latest(limit: int = Query(24, ge=1, le=200)) -> dict:
        rows = [outbox_view.brief_row(r) for r in outbox_view.newest_rows(settings.outbox, limit)]
        return {
            "rows": [pictures.with_picture(r, model.classes) for r in rows],
            "failures": outbox_view.newest_failures(settings.outbox, 20),
            "status": _status(settings),
            "report": numbers.latest(),
        }

    @app.get("/api/review")
    def review(limit: int = Query(24, ge=1, le=200)) -> dict:
        queue = outbox_view.review_queue(settings.outbox, limit)
        return {"rows": [pictures.with_picture(r, model.classes) for r in queue]}

    @app.post("/api/reviews", status_code=201)
    def decide(decision: Decision) -> dict:
        """A person's decision on a row: appended to reviews.jsonl, durably."""
        if decision.label not in model.classes:
            raise HTTPException(422, f"{decision.label!r} is not one of the model's classes")
        return append_review(settings.outbox, row_id=decision.id, file=decision.file,
                             predicted=decision.predicted, label=decision.label, at=time.time())

    return app


class _Model:
    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.classes = list(classifier.class_names)
        self.lock = threading.Lock()

    def info(self) -> dict:
        card = self.classifier.card
        return {"name": self.classifier.name, "version": self.classifier.version,
                "dataset": card.get("dataset"), "classes": self.classes,
                "draw": card.get("dataset") == "mnist"}

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
        from worker.report import build_report

        try:
            report = build_report(self.outbox)
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


# Characters never kept in a name given to the inbox: path separators and control characters.
UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")


def _plain_name(filename: str | None) -> str:
    """Only the last part of what a browser calls the file, never a path: ``../../etc/x.png``
    is ``x.png``; a hidden name (which the daemon would ignore) loses its leading dots."""
    name = UNSAFE.sub("_", (filename or "").replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".").strip()
    name = name.encode("utf-8")[:200].decode("utf-8", "ignore")
    return name or "upload"


def _drop(inbox: Path, name: str, data: bytes) -> str:
    """Write ``data`` whole under a hidden temporary name (which the daemon ignores), synced, then
    link it into place under ``name`` or, if taken, ``name-1``, ``name-2``...; returns the name."""
    if not data:
        raise HTTPException(422, "the file is empty")
    tmp = inbox / f".upload-{secrets.token_hex(8)}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    stem, suffix = os.path.splitext(name)
    try:
        for n in range(1000):
            candidate = name if n == 0 else f"{stem}-{n}{suffix}"
            if _place(tmp, inbox / candidate):
                return candidate
        raise HTTPException(409, f"too many files called {name} are waiting")
    finally:
        if tmp.exists():
            os.unlink(tmp)


def _place(tmp: Path, target: Path) -> bool:
    """Link ``tmp`` to ``target`` unless something is there; where the inbox's file system has
    no hard links (some network shares), rename it there instead. False if the name is taken."""
    try:
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if os.path.lexists(target):
            return False
        try:
            os.rename(tmp, target)
        except OSError:
            raise HTTPException(503, f"cannot write into the inbox: {exc.strerror}") from None
        return True


def _status(settings: ServeSettings) -> dict:
    try:
        return folder_status(settings.inbox, settings.outbox)
    except Exception as exc:  # noqa: BLE001 - the numbers are a nicety; the page goes on without them
        return {"error": str(exc)}


def _guard(app: FastAPI, token: str | None) -> None:
    @app.middleware("http")
    async def check(request: Request, call_next):
        if token is not None and not _carries(request, token):
            return JSONResponse({"detail": "a token is needed (open the page with ?token=...)"}, 401)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_site(request):
            return JSONResponse({"detail": "refused: this request comes from another site"}, 403)
        response = await call_next(request)
        if token is not None and request.query_params.get("token") == token:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response


def _carries(request: Request, token: str) -> bool:
    given = (request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
             or request.headers.get("authorization", "").removeprefix("Bearer ").strip())
    return bool(given) and secrets.compare_digest(given, token)


def _same_site(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
    return urlsplit(origin).netloc == request.headers.get("host")
