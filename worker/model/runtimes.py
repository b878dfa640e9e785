"""The runtimes a ``Classifier`` serves through: LiteRT (the .tflite file, no TensorFlow) or
Keras (the .keras file, with TensorFlow); each maps a batch to the network's outputs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from worker.model.artifact import INPUT_SHAPE, with_features


class LiteRTRunner:
    """Runs a .tflite file with ai-edge-litert; resizes the input only when the batch size changes."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        details = self.interpreter.get_input_details()[0]
        self.input_index = details["index"]
        self.output_indices = [d["index"] for d in self.interpreter.get_output_details()]
        with _stderr_without(XNNPACK_BANNER):
            self.interpreter.allocate_tensors()
        self.batch = int(details["shape"][0])

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        if len(batch) != self.batch:
            self.interpreter.resize_tensor_input(self.input_index, [len(batch), *INPUT_SHAPE])
            self.interpreter.allocate_tensors()
            self.batch = len(batch)
        self.interpreter.set_tensor(self.input_index, batch)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i).copy() for i in self.output_indices]


# What the runtime's C++ prints on its first tensor allocation in a process, with no way to turn
# it off: on every command's stderr, even with -q, and in the journal.
XNNPACK_BANNER = b"Created TensorFlow Lite XNNPACK delegate for CPU."


_stderr_redirect = threading.Lock()  # fd 2 is the process's: one redirect at a time


@contextmanager
def _stderr_without(banner: bytes) -> Iterator[None]:
    """File descriptor 2 caught in a temporary file while the block runs, then written back
    without the lines holding ``banner``: what other threads write meanwhile comes late, never
    lost. Where fd 2 cannot be caught (no temporary file, no descriptor left), the block runs
    as it is and the banner shows."""
    with _stderr_redirect:
        caught, saved = _catch_stderr()
        if caught is None:
            yield
            return
        with caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                if sys.stderr is not None:
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                _write_back(caught, banner)


def _catch_stderr():
    """(a temporary file, a copy of fd 2), or (None, None) where either cannot be had."""
    try:
        caught = tempfile.TemporaryFile()
    except OSError:
        return None, None
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        return caught, os.dup(2)
    except (OSError, ValueError):
        caught.close()
        return None, None


def _write_back(caught, banner: bytes) -> None:
    """What fd 2 received while caught, but the banner's lines, to fd 2 as it is again."""
    try:
        caught.seek(0)
        kept = [line for line in caught.read().splitlines(keepends=True) if banner not in line]
        if kept:
            os.write(2, b"".join(kept))
    except OSError:
        pass  # stderr gone (closed, a full disk): nothing can be said there anyway


class KerasRunner:
    def __init__(self, path: Path) -> None:
        import keras

        self.model = with_features(keras.saving.load_model(path, compile=False))

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.model(batch, training=False)]
