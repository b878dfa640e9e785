"""The page's search of the outbox (``outbox_search``) as routes: ``/api/rows`` (a page of rows
and the cursor of the next), ``/api/rows.csv`` (the view as CSV), ``/api/rows/{id}`` (one row,
its pictures and review history), ``/api/failures`` and ``/api/activity`` (the chart's rows
per minute). Every parameter has a type and a bound; an empty one means any."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi import Path as PathParameter
from fastapi.responses import StreamingResponse

from worker.outbox.reviews import ROW_ID
from worker.web import outbox_search
from worker.web.outbox_search import RowFilter
from worker.web.outbox_view import brief_row, row_by_id

NAME_LENGTH = 255
FOLDER_LENGTH = 1024
LABEL_LENGTH = 100


def row_filter(label: Annotated[str | None, Query(max_length=LABEL_LENGTH)] = None,
               flagged: bool | None = None,
               folder: Annotated[str | None, Query(max_length=FOLDER_LENGTH)] = None,
               name: Annotated[str | None, Query(max_length=NAME_LENGTH)] = None) -> RowFilter:
    """The filter of a request: ``label`` exactly, ``flagged`` by the review flag, ``folder``
    the file's folder (or one above it), ``name`` any part of the file's path, in any case."""
    return RowFilter(label=label or None, flagged=flagged, folder=folder or None, name=name or None)


def add_search_routes(app: FastAPI, outbox: Path, classes: list[str], with_picture) -> None:
    """``with_picture(row)`` adds a row's pictures (the app's cache of them)."""
    _add_row_routes(app, outbox, classes, with_picture)
    _add_failure_routes(app, outbox)


def _add_row_routes(app: FastAPI, outbox: Path, classes: list[str], with_picture) -> None:
    @app.get("/api/rows")
    def rows(wanted: Annotated[RowFilter, Depends(row_filter)],
             limit: Annotated[int, Query(ge=1, le=200)] = 50,
             cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None) -> dict:
        """Rows that match, newest first, ``limit`` at most, from those before ``cursor``;
        ``next`` is the cursor of the next page (null: no more). A page reads a bounded part
        of the outbox: it may hold fewer rows than ``limit`` and still have a ``next``."""
        found = outbox_search.search_rows(outbox, wanted, limit, cursor)
        return {"rows": found.rows, "next": found.next}

    @app.get("/api/rows.csv")
    def rows_csv(wanted: Annotated[RowFilter, Depends(row_filter)]) -> StreamingResponse:
        """The rows that match as CSV, newest first, the first 10,000."""
        lines = outbox_search.csv_lines(outbox_search.all_rows(outbox, wanted), classes)
        return StreamingResponse(lines, media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="outbox-view.csv"'})

    @app.get("/api/rows/{row_id}")
    def one_row(row_id: Annotated[str, PathParameter(pattern=f"^{ROW_ID.pattern}$", max_length=30)]) -> dict:
        """One row: its fields, probabilities, pictures (the input as archived, the 28x28 the
        model saw) and the decisions on it, oldest first."""
        row = row_by_id(outbox, row_id)
        if row is None:
            raise HTTPException(404, f"the outbox has no row {row_id}")
        shown = {**with_picture(brief_row(row)), "probabilities": row["probabilities"]}
        return {"row": shown, "history": outbox_search.row_history(outbox, row_id)}


def _add_failure_routes(app: FastAPI, outbox: Path) -> None:
    @app.get("/api/failures")
    def failures(kind: Annotated[str | None, Query(max_length=LABEL_LENGTH)] = None,
                 folder: Annotated[str | None, Query(max_length=FOLDER_LENGTH)] = None,
                 name: Annotated[str | None, Query(max_length=NAME_LENGTH)] = None,
                 limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict:
        """The newest error records that match, ``limit`` at most."""
        found = outbox_search.search_failures(outbox, kind=kind or None, folder=folder or None,
                                              name=name or None, limit=limit)
        return {"failures": found}

    @app.get("/api/activity")
    def activity(minutes: Annotated[int, Query(ge=1, le=1440)] = 60) -> dict:
        """Rows and flagged rows in each of the last ``minutes`` minutes, from the newest rows."""
        return {"minutes": outbox_search.activity(outbox, minutes)}
