"""The outbox: durable records (``predictions.jsonl``, ``predictions.csv``), the archive of
inputs (``processed/``) and the quarantine of refused ones (``failed/`` with ``.error.json``).

Its verbs are the daemon's last steps for a batch: ``record`` the rows, then ``archive`` each
classified input and ``quarantine`` each refused one. ``Outbox`` composes the parts, each in a
module of its own: the record formats and every name of the outbox (``records.py``; readers
such as ``report`` take the file names from there), the two files appended durably
(``predictions.py``) and checked, a torn tail cut (``repair.py``), the archive and the
quarantine (``inputs.py``).
"""

from __future__ import annotations

from pathlib import Path

from worker.errors import ConfigError
from worker.outbox.inputs import Archive, Quarantine
from worker.outbox.predictions import PredictionFiles, Written
from worker.outbox.records import CSV_NAME, FAILED_DIR, JSONL_NAME, PROCESSED_DIR, CsvLayout, Row


class Outbox:
    """The outbox folder, opened for one model's rows (``class_names`` make the CSV columns)."""

    def __init__(self, root: Path, class_names: list[str], *, on_success: str = "keep") -> None:
        self.root = Path(root)
        self.processed = self.root / PROCESSED_DIR
        self.failed = self.root / FAILED_DIR
        self.jsonl_path = self.root / JSONL_NAME
        self.csv_path = self.root / CSV_NAME
        self.layout = CsvLayout(class_names, self.csv_path)
        self.keep_inputs = on_success == "keep"
        try:
            self._open()
        except OSError as exc:
            raise ConfigError(f"outbox {self.root} is not writable: {exc.strerror or exc}") from exc

    def _open(self) -> None:
        self.layout.reset()
        self.root.mkdir(parents=True, exist_ok=True)
        self._archive = Archive(self.processed, keep=self.keep_inputs)
        self._quarantine = Quarantine(self.failed)
        self._files = PredictionFiles(self.root, self.layout)

    def close(self) -> None:
        self._files.close()
        self._archive.close()
        self._quarantine.close()

    def reopen(self) -> None:
        """Open the files again by name: after log rotation moved them away, new ones start
        (with the CSV header); rows never go on into the moved files."""
        self.close()
        self._open()

    def record(self, rows: list[Row], *, written: Written = (set(), set())) -> None:
        """Write rows durably: JSONL (fsync), then CSV (fsync); ``written`` as ``written_ids``
        gives them on a replay (see ``PredictionFiles.append``)."""
        self._files.append(rows, written=written)

    def archive(self, src: Path, rel: str, claim_id: str) -> None:
        """A classified input leaves ``.work/``: into ``processed/``, or deleted (--on-success)."""
        self._archive.archive(src, rel, claim_id)

    def quarantine(self, src: Path, rel: str, claim_id: str, record: dict, *,
                   too_big: Path | None = None) -> Path:
        """A refused input goes to ``failed/`` with its ``.error.json`` beside it (see
        ``Quarantine.quarantine``)."""
        return self._quarantine.quarantine(src, rel, claim_id, record, too_big=too_big)

    def written_ids(self, wanted: set[str]) -> Written:
        """The row ids of ``wanted`` claims (a document's pages too) already in the CSV and in
        the JSONL."""
        return self._files.written_ids(wanted)

    def repair(self) -> None:
        """Cut torn tails after a failed write (disk full), so the next append starts clean; a
        file that is not ours by now is set aside and new ones are opened."""
        self._files.repair()
