"""Accuracy on scan-like pages: our preprocessing against the naive way, same model, same files.

Each of N MNIST *test* digits (never seen in training) becomes a page as a scanner gives it: dark
ink on a 400-1000 x 500-1400 light page, off-centre, unevenly lit, noisy, with dust, JPEG
(quality 60-95) or PNG, grey or tinted colour (see tests/factories.py). The naive way is the
seeds': read grey, resize the page to 28x28, scale to [0, 1].

    .venv/bin/python bench/scan_accuracy.py [--count 1000] [--model models/mnist.keras]
        [--profiles digits-v1,digits-v3,digits-v4]   # ours with each profile, same files
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from factories import write_scan  # noqa: E402

from worker import defaults  # noqa: E402
from worker.daemon.classify import chunked, classify_batch  # noqa: E402
from worker.model.classifier import Classifier  # noqa: E402
from worker.preprocess import PROFILES  # noqa: E402
from worker.training import datasets  # noqa: E402


def naive_inputs(paths: list[Path]) -> np.ndarray:
    grey = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]
    return np.stack([cv2.resize(g, (28, 28)).astype(np.float32)[:, :, None] / 255 for g in grey])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--model", type=Path, default=defaults.MODEL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profiles", default="", help="preprocessing profiles to compare, by name "
                        "(default: the model's own)")
    args = parser.parse_args()

    mnist = datasets.load("mnist")
    classifier = Classifier(args.model)
    rng = np.random.default_rng(args.seed)
    labels = mnist.test_labels[: args.count]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.count):
            suffix = ".jpg" if rng.random() < 0.7 else ".png"
            paths.append(write_scan(Path(tmp) / f"{i:05d}{suffix}", mnist.test_images[i], rng))
        print(f"scan-like pages: {args.count} MNIST test digits, model {args.model.name}")
        print(f"{'pipeline':<28}{'accuracy':>10}{'refused':>9}{'pages/s':>9}")
        for name in args.profiles.split(",") if args.profiles else [classifier.profile.name]:
            classifier.profile = PROFILES[name]
            started = time.perf_counter()
            outcomes = [o for batch in chunked(paths, 256) for o in classify_batch(batch, classifier)]
            speed = args.count / (time.perf_counter() - started)
            ours = np.array([int(o.prediction.label) if o.ok else -1 for o in outcomes])
            failed = sum(not o.ok for o in outcomes)
            print(f"{'ours, ' + name:<28}{(ours == labels).mean():>10.2%}{failed:>9}{speed:>9.0f}")
        naive = classifier.predict_proba(naive_inputs(paths)).argmax(axis=1)
    print(f"{'naive (resize page to 28)':<28}{(naive == labels).mean():>10.2%}")


if __name__ == "__main__":
    main()
