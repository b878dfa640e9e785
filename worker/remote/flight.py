"""A batch out with the classify workers (``RemoteFlight``): its files read here (not decoded:
no decoder runs in the watcher) and cut into tasks of about ``TASK_BYTES``, the sha256 of each
file computed here from the bytes sent, never taken from an answer."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from worker.daemon.claim import Claim, claim_size
from worker.daemon.classify import Outcome, outcomes_of
from worker.errors import InputError
from worker.model.classifier import Classifier, Scored
from worker.outbox.predictions import Written
from worker.preprocess import Limits, LoadedInput, read_bytes
from worker.remote.answer_message import Answer, Scores
from worker.remote.task_message import TaskFile

# A batch's files are cut into tasks of about this much: a few pages each, so the pages of one
# batch spread over the workers (a task costs the watcher about a millisecond).
TASK_BYTES = 1024 * 1024


@dataclass
class RemoteFlight:
    """A batch out with the classify workers. ``unread`` are the files that could not be read
    here (their errors, by position); the others travel as ``files``, with the sha256 of
    their bytes kept here (``digests``, in the same order)."""

    claims: list[Claim]
    files: list[TaskFile]
    digests: list[str]
    unread: dict[int, InputError]
    written: Written | None
    started: float
    classifier: Classifier
    task_id: str
    sent: bool = False
    sent_at: float = 0.0
    send_after: float = float("-inf")  # a refused batch is sent again after the retry time
    answer: Answer | None = None
    scores: Scores | None = None

    @property
    def model(self) -> tuple[str, str]:
        return (self.classifier.name, self.classifier.version)

    def take(self, answer: Answer) -> None:
        """The answer, once checked against this batch (``Rejected`` if it does not fit)."""
        ids = [f.claim_id for f in self.files]
        self.scores = answer.check(ids, self.model, len(self.classifier.class_names))
        self.answer = answer

    def outcomes(self) -> list[Outcome]:
        remote = iter(zip(self.answer.files, self.digests, strict=True))
        loaded = [self.unread[i] if i in self.unread else _loaded(*next(remote))
                  for i in range(len(self.claims))]
        scored = None if self.scores is None else \
            Scored(self.scores.probabilities, self.scores.reviews, self.scores.review_scores)
        return outcomes_of([c.path for c in self.claims], loaded, self.classifier, scored)


def _loaded(answer, sha256: str) -> LoadedInput | InputError:
    """A file's answer as what ``outcomes_of`` takes: its error, or its pages without pixels
    and the digest of the bytes sent."""
    if answer.error is not None:
        kind, message, bytes_read = answer.error
        error = InputError(kind, message)
        error.bytes_read = bytes_read
        return error
    return LoadedInput(pixels=None, sha256=sha256, pages=tuple((n, None) for n in answer.pages))



def chunks(claims: list[Claim]) -> Iterator[list[Claim]]:
    """The claims in runs of about ``TASK_BYTES`` (a file bigger than that alone)."""
    chunk: list[Claim] = []
    size = 0
    for claim in claims:
        bytes_ = claim_size(claim)
        if chunk and size + bytes_ > TASK_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(claim)
        size += bytes_
    if chunk:
        yield chunk


def read_flight(claims: list[Claim], written: Written | None, *, limits: Limits, classifier: Classifier,
                clock: Callable[[], float]) -> RemoteFlight:
    """Read the claimed files for a task; those that cannot be read keep their error here."""
    files, digests, unread = [], [], {}
    for i, claim in enumerate(claims):
        try:
            data = read_bytes(claim.path, max_bytes=limits.max_bytes, follow_symlinks=False, name=claim.rel)
        except InputError as exc:
            unread[i] = exc
            continue
        files.append(TaskFile(claim.id, claim.rel, data))
        digests.append(hashlib.sha256(data).hexdigest())
    return RemoteFlight(claims, files, digests, unread, written, clock(), classifier, uuid.uuid4().hex)
