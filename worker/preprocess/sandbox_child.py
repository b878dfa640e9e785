"""The sandbox's child process: requests on stdin, answers on a pipe of its own, until EOF.

Started by ``sandbox.py`` (the parent side) as ``python -c CHILD_MAIN``. Each request is decoded
and normalised under an address-space cap (``RLIMIT_AS``) set for that request alone; the answer
is a length-prefixed JSON header, then the inputs as little-endian float32 (or a grey page's
bytes). Whatever a library prints goes to stderr, never into an answer, and the child exits once
its parent is gone.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import sys
import threading
import time

import numpy as np

from worker.errors import InputError

# How often a child checks that its parent is still there (it exits once orphaned).
ORPHAN_CHECK_SECONDS = 0.5
# What OpenCV's error says when an allocation fails (it raises cv2.error, not MemoryError).
OPENCV_OUT_OF_MEMORY = "Insufficient memory"


def serve_child() -> None:
    """The child's loop: a request on stdin, its answer on the protocol pipe, until EOF."""
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into an answer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    from worker.preprocess.loading import decode_and_fit

    requests = sys.stdin.buffer
    while len(sizes := requests.read(12)) == 12:
        head_length, data_length = struct.unpack("<IQ", sizes)
        request = json.loads(requests.read(head_length))
        data = requests.read(data_length)
        _answer(protocol, *_fit(decode_and_fit, data, request))


def _fit(decode_and_fit, data: bytes, request: dict) -> tuple[dict, np.ndarray | None]:
    """One request's answer: the header and the inputs (a document's pages stacked)."""
    from worker.preprocess import Limits, profile_from_dict
    from worker.preprocess.loading import Document
    from worker.preprocess.reading import decode_page

    name, limits = request["name"], Limits(**request["limits"])
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _mapped() + limits.decode_memory
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        if "page" in request:
            grey = decode_page(data, name, request["page"], limits)
            return {"ok": True, "grey": list(grey.shape)}, grey
        fitted = decode_and_fit(data, name, profile_from_dict(request["profile"]), limits)
        if isinstance(fitted, Document):
            return {"ok": True, "pages": [n for n, _ in fitted]}, np.stack([p for _, p in fitted])
        return {"ok": True, "pages": None}, fitted[np.newaxis]
    except InputError as exc:
        return {"ok": False, "kind": exc.kind, "message": exc.message}, None
    except Exception as exc:  # noqa: BLE001 - a decoder's bug is this file's error
        if isinstance(exc, MemoryError) or OPENCV_OUT_OF_MEMORY in str(exc):
            return {"ok": False, "kind": "too-large", "message": f"{name}: decoding needed more than the "
                    f"{limits.decode_memory / 2**20:,.0f} MiB memory limit"}, None
        return {"ok": False, "kind": "internal", "message": f"unexpected error reading {name}: {exc}"}, None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _answer(protocol, header: dict, pixels: np.ndarray | None) -> None:
    """The header, then the inputs as little-endian float32 (or a grey page's bytes)."""
    head = json.dumps(header).encode()
    if pixels is None:
        body = b""
    elif pixels.dtype == np.uint8:
        body = np.ascontiguousarray(pixels).tobytes()
    else:
        body = np.ascontiguousarray(pixels, dtype="<f4").tobytes()
    protocol.write(struct.pack("<I", len(head)) + head + body)
    protocol.flush()


def _mapped() -> int:
    """Bytes of address space the child holds now (its libraries, between files)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os._exit(0)

