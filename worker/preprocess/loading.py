"""Loading files into model inputs: read, check, decode and normalise, file by file or a
batch at a time, with each file's failure kept in its own place."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.errors import InputError
from worker.preprocess import headers, sandbox
from worker.preprocess.headers import Header
from worker.preprocess.normalizing import normalize
from worker.preprocess.profiles import DIGITS, Profile
from worker.preprocess.reading import (
    DEFAULT_LIMITS,
    Limits,
    check_within,
    decode,
    decode_page,
    decode_pages,
    read_bytes,
)
from worker.preprocess.sandbox import Fitted
from worker.preprocess.small import grouped_by_shape, normalize_stack

log = logging.getLogger(__name__)

# The kind of error ``load_many(defer_unbounded=True)`` gives a file it leaves for the sandbox.
DEFERRED = "needs-sandbox"
# ``load_many`` decodes files until their images hold this many pixels, then normalises them:
# enough small images to keep each step's code in the CPU caches, never many big pages at once.
RUN_PIXELS = 4_000_000


@dataclass(frozen=True)
class LoadedInput:
    pixels: np.ndarray  # (28, 28, 1) float32 in [0, 1]; a document's first page with ink
    sha256: str  # of the file's bytes, as read
    # A document of several pages: (page number from 1, model input) for each page with ink,
    # the first of them being ``pixels``. Empty for an image.
    pages: tuple[tuple[int, np.ndarray], ...] = ()

    @property
    def inputs(self) -> list[np.ndarray]:
        return [pixels for _, pixels in self.pages] if self.pages else [self.pixels]


class Document(list):
    """A document's pages with ink, normalised as they are decoded: (page number, input)."""

    @property
    def size(self) -> int:  # what a run of ``load_many`` counts: the inputs, not the pages
        return sum(pixels.size for _, pixels in self)


def load_input(
    path: Path,
    profile: Profile = DIGITS,
    *,
    limits: Limits = DEFAULT_LIMITS,
    follow_symlinks: bool = True,
    name: str | None = None,
) -> LoadedInput:
    """File -> model input and the sha256 of the bytes it came from, or InputError.
    ``name`` is how messages call the file (the daemon passes the inbox-relative path)."""
    path = Path(path)
    (result,) = load_many(
        [path], profile, names=[name or path.name], limits=limits, follow_symlinks=follow_symlinks
    )
    if isinstance(result, InputError):
        raise result
    return result


def load_many(
    paths: list[Path],
    profile: Profile = DIGITS,
    *,
    names: list[str],
    limits: Limits = DEFAULT_LIMITS,
    follow_symlinks: bool = True,
    run_pixels: int = RUN_PIXELS,
    defer_unbounded: bool = False,
) -> list[LoadedInput | InputError]:
    """``load_input`` for each file, in order, with the error in place of a file that fails.
    With ``defer_unbounded``, a file for the sandbox is not decoded but given the error kind
    ``DEFERRED``: a caller that must never wait for the sandbox (the daemon's loop) sends it
    where that wait does no harm (the slow lane).

    It goes step by step across the files (read them all, then decode a run of them, then
    normalise that run) rather than file by file, so each step's code stays in the CPU's
    caches. A run ends once its decoded images hold ``run_pixels``, so big pages never pile up
    in memory. A bug in a decoder fails only its own file.
    """
    def read(path: Path, name: str) -> bytes:
        return read_bytes(path, max_bytes=limits.max_bytes, follow_symlinks=follow_symlinks, name=name)

    def check_and_decode(data: bytes, name: str) -> np.ndarray | Document:
        return _check_and_decode(data, name, profile, limits, defer=defer_unbounded)

    def fit(decoded: np.ndarray | Document | Fitted, name: str) -> np.ndarray | Document | Fitted:
        return decoded if isinstance(decoded, Document | Fitted) else normalize(decoded, profile)

    def fit_run(run: list[int]) -> None:
        together = set(_fit_small_together(results, run, profile))
        for i in run:
            if i not in together:
                results[i] = _guarded(fit, results[i], names[i])

    results: list = [_guarded(read, path, name) for path, name in zip(paths, names, strict=True)]
    digests = [None if isinstance(r, InputError) else hashlib.sha256(r).hexdigest() for r in results]
    _decode_and_fit_in_runs(results, names, check_and_decode, fit_run, run_pixels)
    return [r if isinstance(r, InputError) else _loaded(r, digest)
            for r, digest in zip(results, digests, strict=True)]


def load_bytes(data: bytes, profile: Profile = DIGITS, *, name: str,
               limits: Limits = DEFAULT_LIMITS) -> LoadedInput:
    """Bytes already in memory (an upload, a drawing) -> model input, or InputError: the same
    checks and preprocessing as a file dropped into the inbox."""
    if not data:
        raise InputError("empty", f"{name} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InputError("too-large", f"{name} is {len(data)} bytes, over the {limits.max_bytes} limit")
    decoded = _check_and_decode(data, name, profile, limits)
    fitted = decoded if isinstance(decoded, Document | Fitted) else normalize(decoded, profile)
    return _loaded(fitted, hashlib.sha256(data).hexdigest())


def decode_and_fit(data: bytes, name: str, profile: Profile, limits: Limits) -> np.ndarray | Document:
    """Check, decode and normalise in this process, whatever the file: the sandbox's own work."""
    decoded = _check_and_decode(data, name, profile, limits, sandboxed=False)
    return decoded if isinstance(decoded, Document) else normalize(decoded, profile)


def _check_and_decode(data: bytes, name: str, profile: Profile, limits: Limits, *,
                      sandboxed: bool = True, defer: bool = False) -> np.ndarray | Document | Fitted:
    """Decoded grey (or a document's pages, normalised); what its header cannot bound is
    decoded and normalised in the sandbox instead (``Fitted``, or a ``Document``), or with
    ``defer``, refused as ``DEFERRED``."""
    try:
        if sandboxed and _unbounded(data):
            return _in_sandbox(data, name, profile, limits, defer)
        header = check_within(data, name, limits)
        if sandboxed and _unbounded_header(header):
            return _in_sandbox(data, name, profile, limits, defer)
        if header.pages > 1:
            return _document(decode_pages(data, name, header, limits.max_pixels), profile, name)
        return decode(data, name, header, limits.max_pixels)
    except InputError as exc:
        exc.bytes_read = len(data)  # a truncated file that grows since was still being written
        raise


def grey_page(data: bytes, name: str, page: int | None = None, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """``data`` in 8-bit grey (of a document, its page ``page``), decoded where
    ``_check_and_decode`` would decode it: what its header cannot bound, in the sandbox."""
    if _unbounded(data) or _unbounded_header(check_within(data, name, limits)):
        return sandbox.shared().page(data, name, page, limits)
    return decode_page(data, name, page, limits)


def _in_sandbox(data: bytes, name: str, profile: Profile, limits: Limits, defer: bool) -> Document | Fitted:
    if defer:
        raise InputError(DEFERRED, f"{name} is decoded in the sandbox, beside the loop")
    return sandbox.shared().load(data, name, profile, limits)


def _unbounded(data: bytes) -> bool:
    return headers.unbounded(data[: headers.PDF_HEADER_WITHIN], len(data))


def _unbounded_header(header: Header) -> bool:
    """What a header read here says is for the sandbox after all: a progressive JPEG, or a
    format of the sandbox's with first bytes ``unbounded`` missed."""
    return header.progressive or header.format in headers.SANDBOXED_FORMATS


def _loaded(fitted: np.ndarray | Document | Fitted, sha256: str) -> LoadedInput:
    if isinstance(fitted, Document):
        return LoadedInput(pixels=fitted[0][1], sha256=sha256, pages=tuple(fitted))
    if isinstance(fitted, Fitted):
        return LoadedInput(pixels=fitted.pixels, sha256=sha256)
    return LoadedInput(pixels=fitted, sha256=sha256)


def _document(pages, profile: Profile, name: str) -> Document:
    """Each page decoded and normalised in turn. Blank pages (a duplex scan's backs) are left
    out, their numbers kept by the others; a document with no ink on any page is no-ink."""
    document = Document()
    for number, grey in enumerate(pages, start=1):
        try:
            document.append((number, normalize(grey, profile)))
        except InputError as exc:
            if exc.kind != "no-ink":
                raise
    if not document:
        raise InputError("no-ink", f"{name}: no ink found on any of its pages")
    return document


def _decode_and_fit_in_runs(results: list, names: list[str], decode_one, fit_run, run_pixels: int) -> None:
    """In place: file bytes -> decoded grey -> model input, a run of files at a time."""
    run: list[int] = []
    run_size = 0
    for i, name in enumerate(names):
        if not isinstance(results[i], InputError):
            results[i] = _guarded(decode_one, results[i], name)
        if not isinstance(results[i], InputError):
            run.append(i)
            run_size += results[i].size
        if run and (run_size >= run_pixels or i == len(names) - 1):
            fit_run(run)
            run, run_size = [], 0


def _fit_small_together(results: list, run: list[int], profile: Profile) -> list[int]:
    """In place: the run's small images of one shape normalised together (``normalize_stack``,
    the same inputs or errors ``normalize`` gives, a few times faster); returns their indices.
    A group whose stack fails unexpectedly is left to be normalised one by one."""
    images = [i for i in run if not isinstance(results[i], Document | Fitted)]
    done = []
    for members in grouped_by_shape([results[i] for i in images]).values():
        indices = [images[k] for k in members]
        try:
            fitted = normalize_stack(np.stack([results[i] for i in indices]), profile)
        except Exception:  # noqa: BLE001 - normalize, one by one, will say which file fails
            log.exception("normalising %d small images together failed; one by one instead", len(indices))
            continue
        for i, value in zip(indices, fitted, strict=True):
            results[i] = value
        done += indices
    return done


def _guarded(step, value, name: str):
    """The step's result, or the InputError that says why this file cannot be classified."""
    try:
        return step(value, name)
    except InputError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not take the others down
        log.exception("unexpected error reading %s", name)
        return InputError("internal", f"unexpected error reading {name}: {exc}")
