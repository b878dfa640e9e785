"""Decoding what its header cannot bound, in a child process with a memory and a time limit.

A PDF, a multi-page or tiled TIFF, a HEIC photo, a progressive JPEG or any big file can cost
far more than its header says: a few KB of nested PDF forms render for minutes, a small PDF
may hold a 40000x40000 image, and PDFium is not thread-safe, so two documents rendered at once
in one process can crash it. Such files are decoded and normalised here instead, as browsers
and ImageMagick's policy do it: in a child process (one request at a time, so PDFium never
sees two threads) whose address space is capped (``RLIMIT_AS``) and which is killed at a
deadline. A crash, a timeout or the memory cap costs that one file an ``InputError``
(``crashed``, ``too-slow``, ``too-large``); the caller and every other file go on.

The child's answer is treated like any message from outside: a length-prefixed JSON header
checked field by field, then raw float32 inputs checked for shape and range. No pickle: a
child taken over by a malicious file can send us nothing but numbers and a refusal.

This module is the parent's side; the child's loop is ``sandbox_child.py``. ``Sandbox`` keeps
a few children alive between files (starting one imports OpenCV, NumPy, Pillow and PDFium)
and replaces any that died or were killed. One per process is shared by every caller
(``shared()``); ``close()`` kills the children at once, so a stop never waits for a decode.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from worker import defaults
from worker.errors import InputError

log = logging.getLogger(__name__)

SIZE = 28  # the model input's side (normalizing.SIZE; not imported: the parent needs no OpenCV)
INPUT_BYTES = SIZE * SIZE * 4
# A child's refusal says at most this much (the rest is cut), and its JSON header is at most
# this long (a longer one is no answer of ours); it names at most MAX_PAGES inputs.
MAX_MESSAGE = 2000
HEADER_MAX = 64 * 1024
CHILD_MAIN = "from worker.preprocess.sandbox_child import serve_child; serve_child()"
# How a child ends when an allocation fails under its memory cap: PDFium's and C++'s
# allocators abort or trap rather than return an error.
OUT_OF_MEMORY_ENDS = frozenset({-signal.SIGABRT, -signal.SIGTRAP, -signal.SIGILL, -signal.SIGBUS})
# Kinds a child may give for a refused file (the rest come from the parent itself).
CHILD_KINDS = frozenset({
    "corrupt", "truncated", "not-an-image", "unsupported", "too-large", "too-many-pages",
    "too-many-scans", "no-ink", "internal",
})


@dataclass(frozen=True)
class Fitted:
    """One image's model input, fitted in the sandbox (a document's pages are a ``Document``)."""

    pixels: np.ndarray

    @property
    def size(self) -> int:
        return self.pixels.size


class Sandbox:
    """``processes`` places for a child each, taken by one caller at a time; a place's child
    is started when first needed and again after it failed."""

    def __init__(self, processes: int = defaults.DECODE_THREADS, *, child_main: str | None = None) -> None:
        """``child_main`` is the child's Python code (tests give one that misbehaves)."""
        self._places: queue.LifoQueue[_Child] = queue.LifoQueue()
        self._all = [_Child(child_main or CHILD_MAIN) for _ in range(max(1, processes))]
        for place in self._all:
            self._places.put(place)
        self._lock = threading.Lock()
        self._closed = False

    def load(self, data: bytes, name: str, profile, limits):
        """``data`` checked, decoded and normalised in a child: a ``Fitted`` image, a
        ``Document`` of pages, or InputError (the file's own, or why the child gave none)."""
        return self._ask(data, name, {"profile": profile.to_dict()}, limits)

    def page(self, data: bytes, name: str, page: int | None, limits) -> np.ndarray:
        """``data`` decoded in a child to 8-bit grey (of a document, its page ``page``), as
        ``reading.decode_page`` gives it, or InputError."""
        return self._ask(data, name, {"page": page}, limits)

    def _ask(self, data: bytes, name: str, what: dict, limits):
        request = {"name": name, "limits": asdict(limits), **what}
        child = self._places.get()
        try:
            with self._lock:
                if self._closed:
                    raise InputError("internal", f"{name}: the worker is stopping; not decoded")
                child.start_if_needed()
                child.busy = True
            return child.ask(request, data, limits)
        except InputError:  # the file's own refusal: the child is well and stays
            raise
        except _ChildLost as lost:
            child.kill()
            raise InputError(lost.kind, f"{name}: {lost.reason}") from None
        except OSError as exc:  # the child could not be started: no fault of the file's
            log.error("cannot start the decoder process (%s): can this user run %s?", exc, sys.executable)
            raise InputError("internal", f"{name}: cannot start the decoder process ({exc})") from None
        except BaseException:
            child.kill()
            raise
        finally:
            with self._lock:
                child.busy = False
            self._places.put(child)

    def close(self) -> None:
        """Kill every child now (a decode in progress ends as an error, which the stopping
        caller throws away); no child starts after this. A busy child is only signalled: its
        caller closes its pipes, so no descriptor it still reads is closed under it."""
        with self._lock:
            self._closed = True
            busy = [child for child in self._all if child.busy]
            idle = [child for child in self._all if not child.busy]
        for child in busy:
            child.signal_kill()
        for child in idle:
            child.kill()


class _ChildLost(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class _Child:
    """A place for one child process and its two pipes (no process until first needed)."""

    def __init__(self, main: str) -> None:
        self.main = main
        self.process: subprocess.Popen | None = None
        self.busy = False  # a caller is in ``ask`` (set and read under the sandbox's lock)

    def start_if_needed(self) -> None:
        """A child, fresh if the last one said more than it was asked (no file's answer may
        come from another's decoding)."""
        if self.process is not None and select.select([self.process.stdout], [], [], 0)[0]:
            self.kill()
        if self.process is None:
            self.process = _start_child(self.main)

    def ask(self, request: dict, data: bytes, limits):
        process = self.process  # ``kill`` (at a stop, on another thread) may forget it
        if process is None:
            raise _ChildLost("crashed", "the decoder process was stopped")
        deadline = time.monotonic() + limits.decode_seconds
        head = json.dumps(request).encode()
        try:
            process.stdin.write(struct.pack("<IQ", len(head), len(data)) + head)
            process.stdin.write(data)
            process.stdin.flush()
        except (ValueError, OSError):
            raise _ChildLost("crashed", "the decoder process ended before it took the file") from None
        (length,) = struct.unpack("<I", _read(process, 4, deadline, limits))
        if length > HEADER_MAX:
            raise _ChildLost("crashed", "the decoder process sent a malformed answer")
        answer = _parse_answer(_read(process, length, deadline, limits), limits.max_pixels)
        if not answer["ok"]:
            raise InputError(answer["kind"], answer["message"])
        if ("grey" in answer) != ("page" in request):
            raise _ChildLost("crashed", "the decoder process answered another question")
        if "grey" in answer:
            height, width = answer["grey"]
            raw = _read(process, height * width, deadline, limits)
            return np.frombuffer(raw, dtype=np.uint8).reshape(height, width).copy()
        raw = _read(process, INPUT_BYTES * len(answer["pages"]), deadline, limits)
        return _fitted(answer["pages"], np.frombuffer(raw, dtype="<f4"))

    def signal_kill(self) -> None:
        """SIGKILL the process, leaving its pipes to its caller."""
        process = self.process
        if process is not None:
            process.kill()

    def kill(self) -> None:
        """End the process (if any) at once; the place stays, for a new one."""
        process, self.process = self.process, None
        if process is None:
            return
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _read(process: subprocess.Popen, count: int, deadline: float, limits) -> bytes:
    """``count`` bytes of the child's answer, or _ChildLost at the deadline or its end."""
    try:
        fd = process.stdout.fileno()
    except ValueError:  # closed: killed at a stop
        raise _ChildLost("crashed", "the decoder process was stopped") from None
    chunks, remaining = [], count
    while remaining > 0:
        left = deadline - time.monotonic()
        try:
            ready = left > 0 and select.select([fd], [], [], left)[0]
            chunk = os.read(fd, min(remaining, 1 << 20)) if ready else None
        except (OSError, ValueError):  # its pipe closed under us: killed at a stop
            raise _ChildLost("crashed", "the decoder process was stopped") from None
        if chunk is None:
            raise _ChildLost("too-slow", f"decoding took longer than the {limits.decode_seconds:g} s limit")
        if not chunk:
            raise _lost(process, limits)
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _lost(process: subprocess.Popen, limits) -> _ChildLost:
    """Why the child ended mid-answer: the memory cap (an allocator that cannot get memory
    aborts or traps) or another crash."""
    code = process.wait()
    if code in OUT_OF_MEMORY_ENDS:
        return _ChildLost("too-large", f"decoding needed more than the {limits.decode_memory / 2**20:,.0f} "
                                       f"MiB memory limit (the decoder ended with {code})")
    return _ChildLost("crashed", f"the decoder crashed on this file (exit {code})")


def _start_child(main: str) -> subprocess.Popen:
    """``python -c main``, importing this very package (even from a
    checkout that is not installed), with one BLAS thread."""
    package_parent = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    return subprocess.Popen([sys.executable, "-c", main], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, close_fds=True)


def _parse_answer(raw: bytes, max_pixels: int) -> dict:
    """The child's JSON header, checked: ``{"ok": true, "pages": [int...] | null}``,
    ``{"ok": true, "grey": [height, width]}`` or ``{"ok": false, "kind": str, "message": str}``."""
    try:
        answer = json.loads(raw)
    except ValueError:
        raise _ChildLost("crashed", "the decoder process sent a malformed answer") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise _ChildLost("crashed", "the decoder process sent a malformed answer")
    if not answer["ok"]:
        kind, message = answer.get("kind"), answer.get("message")
        if kind not in CHILD_KINDS or not isinstance(message, str):
            raise _ChildLost("crashed", "the decoder process sent a malformed answer")
        return {"ok": False, "kind": kind, "message": message[:MAX_MESSAGE]}
    if "grey" in answer:
        shape = answer["grey"]
        if not (isinstance(shape, list) and len(shape) == 2 and all(type(n) is int and n > 0 for n in shape)
                and shape[0] * shape[1] <= max_pixels):
            raise _ChildLost("crashed", "the decoder process sent a malformed answer")
        return {"ok": True, "grey": shape}
    pages = answer.get("pages")
    valid = pages is None or (
        isinstance(pages, list) and 0 < len(pages) <= defaults.MAX_PAGES
        and all(type(n) is int and 0 < n <= defaults.MAX_PAGES for n in pages)
        and pages == sorted(set(pages)))
    if not valid:
        raise _ChildLost("crashed", "the decoder process sent a malformed answer")
    return {"ok": True, "pages": [None] if pages is None else pages}


def _fitted(pages: list, pixels: np.ndarray):
    from worker.preprocess.loading import Document

    if not (np.isfinite(pixels).all() and pixels.min(initial=0) >= 0 and pixels.max(initial=0) <= 1):
        raise _ChildLost("crashed", "the decoder process sent inputs out of range")
    inputs = pixels.astype(np.float32).reshape(len(pages), SIZE, SIZE, 1)
    if pages == [None]:
        return Fitted(inputs[0])
    return Document(zip(pages, inputs, strict=True))


_shared: Sandbox | None = None
_shared_lock = threading.Lock()


def shared() -> Sandbox:
    """This process's sandbox, made at first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Sandbox()
        return _shared


def close_shared() -> None:
    """Kill this process's decoder children now (at a stop: a decode in progress is not waited
    for); a later load starts new ones."""
    global _shared
    with _shared_lock:
        sandbox, _shared = _shared, None
    if sandbox is not None:
        sandbox.close()


atexit.register(close_shared)


def _forget_after_fork() -> None:
    """A forked process (a report worker) must not use or kill its parent's children."""
    global _shared
    _shared = None


os.register_at_fork(after_in_child=_forget_after_fork)
