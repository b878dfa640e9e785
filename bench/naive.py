"""The naive way, as the seeds did it: per file, read, resize to 28x28, ``model.predict`` on a
Keras model, append one CSV line (open, write, fsync, close). Prints files/s of the loop.

    .venv/bin/python bench/naive.py MODEL.keras FILE...
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    import cv2
    import keras

    model = keras.saving.load_model(sys.argv[1], compile=False)
    paths = [Path(arg) for arg in sys.argv[2:]]
    out = Path(sys.argv[2]).parent / "naive.csv"
    started = time.perf_counter()
    for path in paths:
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        x = cv2.resize(grey, (28, 28)).astype("float32")[None, :, :, None] / 255
        probs = model.predict(x, verbose=0)[0]
        with open(out, "a") as fh:
            fh.write(f"{path.name},{probs.argmax()},{probs.max():.6f}\n")
            fh.flush()
            os.fsync(fh.fileno())
    print(f"{len(paths) / (time.perf_counter() - started):.2f}")


if __name__ == "__main__":
    main()
