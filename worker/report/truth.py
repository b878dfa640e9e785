"""What the right label of a row is, where someone said so.

Three sources, the later winning: ``--truth folders`` (the first folder of a file's path is its
label: how people sort scans), ``--truth labels.csv`` (``file,label`` lines) and the decisions a
person made on the web page (``outbox/reviews.jsonl``: a row id and its corrected label).
"""

from __future__ import annotations

import csv
from pathlib import Path

from worker.errors import ConfigError
from worker.outbox.reviews import read_reviews

FOLDERS = "folders"


class Truth:
    def __init__(self, source: str | None, outbox: Path) -> None:
        self.source = source
        self.by_folder = source == FOLDERS
        self.by_file = _read_labels(Path(source)) if source and not self.by_folder else {}
        self.by_row = read_reviews(outbox)

    def __bool__(self) -> bool:
        return self.by_folder or bool(self.by_file) or bool(self.by_row)

    def describe(self) -> str:
        parts = [self.source] if self.source else []
        return " and ".join(parts + ([f"{len(self.by_row)} review(s)"] if self.by_row else []))

    def label_of(self, row: dict) -> str | None:
        """The row's true label, or None where no source says (or says a label the model has
        no class for: a folder named ``misc`` is no label)."""
        label = self.by_row.get(row["id"]) or self.by_file.get(row["file"])
        if label is None and self.by_folder and "/" in row["file"]:
            label = row["file"].split("/", 1)[0]
        return label if label in row["probabilities"] else None


def _read_labels(path: Path) -> dict[str, str]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            labels = {}
            for record in csv.reader(fh):
                if len(record) >= 2 and record[:2] != ["file", "label"]:
                    labels[record[0]] = record[1].strip()
    except OSError as exc:
        raise ConfigError(f"--truth {path}: cannot read it ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"--truth {path}: not a CSV of file,label lines ({exc})") from None
    return labels
