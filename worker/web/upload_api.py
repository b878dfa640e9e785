"""The page's uploads: ``/api/inbox`` puts files whole into the inbox, for the daemon, under
names of their own (``drop``); ``/api/record`` follows each to its row by that name and its
bytes' sha256, never by a name an older file had."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, Query, UploadFile

from worker.web import drop as inbox_drop
from worker.web import outbox_view
from worker.web.drop import is_stored_name, plain_name


def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, f"over the {max_bytes:,}-byte limit")
    return data


def add_upload_routes(app: FastAPI, inbox: Path, outbox: Path, max_bytes: int, upload_cap: int,
                      with_picture) -> None:
    """``with_picture(row)`` adds a row's pictures."""

    @app.post("/api/inbox", status_code=201, max_body_size=upload_cap)
    def drop(files: Annotated[list[UploadFile], File()]) -> dict:
        """Put each file whole into the inbox, for the daemon, under a name of its own;
        returns those names (``names``) and, for each, the name it came with and its sha256."""
        uploads = []
        for file in files:
            original = plain_name(file.filename)
            dropped = inbox_drop.drop(inbox, original, read_upload(file, max_bytes))
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
        found = outbox_view.record_of(outbox, name, sha256, largest=max_bytes)
        if found and "row" in found:
            found["row"] = with_picture(outbox_view.brief_row(found["row"]))
        return found or {"waiting": True}
