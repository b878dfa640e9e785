"""The page's model: ``/api/model`` (its name, version and classes) and ``/api/classify`` (one
image classified now, a drawing or a file: nothing is written anywhere).

The model runs in the page's process behind a lock: LiteRT's interpreter serves one call at a time.
"""

from __future__ import annotations

import threading
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, HTTPException, UploadFile

from worker.errors import InputError
from worker.model.classifier import Classifier, Prediction
from worker.preprocess import load_bytes
from worker.report.thumbnails import seen_uri
from worker.web.drop import plain_name
from worker.web.upload_api import read_upload


class PageModel:
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


def add_model_routes(app: FastAPI, model: PageModel, max_bytes: int, upload_cap: int) -> None:
    @app.get("/api/model")
    def model_info() -> dict:
        return model.info()

    @app.post("/api/classify", max_body_size=upload_cap)
    def classify(file: Annotated[UploadFile, File()]) -> dict:
        """Classify one image now (a drawing, or a file): nothing is written anywhere."""
        return model.classify(read_upload(file, max_bytes), plain_name(file.filename))
