"""``worker serve``: the web page (draw a digit, upload, the live outbox, review) and its API,
made here of the routes of each part: ``model_api``, ``upload_api``, ``live_api``, ``review_api``
and ``search_api``.

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

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from worker.model.classifier import Classifier
from worker.preprocess import DEFAULT_LIMITS
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
from worker.web.live import LiveOutbox
from worker.web.live_api import ReportNumbers, add_live_routes
from worker.web.model_api import PageModel, add_model_routes
from worker.web.pictures import Pictures
from worker.web.review_api import add_review_routes
from worker.web.search_api import add_search_routes
from worker.web.upload_api import add_upload_routes

STATIC = Path(__file__).parent / "static"


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


def create_app(settings: ServeSettings, classifier: Classifier) -> FastAPI:
    # /docs is a page of ours (static/api.html), not Swagger UI: that comes from a CDN.
    app = FastAPI(title="worker", summary="Classify drawings and uploads; follow and review the outbox.",
                  max_body_size=JSON_MAX_BYTES, docs_url=None, redoc_url=None)
    upload_cap = upload_body_cap(settings.max_bytes)
    model = PageModel(classifier, settings.reviewer)
    with_picture = Pictures(settings.outbox, model.classes).with_picture
    live = LiveOutbox(settings.inbox, settings.outbox)
    streams = EventStreams(live)
    app.state.event_streams = streams  # for the server, which ends them when it stops
    _guard(app, settings.token)
    # Added last, so the first a request meets.
    app.add_middleware(HostGate, names=served_names(settings.host, settings.allowed_hosts))
    _add_pages(app)
    add_model_routes(app, model, settings.max_bytes, upload_cap)
    add_upload_routes(app, settings.inbox, settings.outbox, settings.max_bytes, upload_cap, with_picture)
    add_live_routes(app, live, streams, ReportNumbers(settings.outbox), with_picture)
    add_review_routes(app, settings.outbox, model.classes, settings.reviewer)
    add_search_routes(app, settings.outbox, model.classes, with_picture)
    return app


def _add_pages(app: FastAPI) -> None:
    """The page, its static files, the API's documentation (a page of ours) and the icon."""
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
