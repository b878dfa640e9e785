"""The review flag, measured: does ``unlike-training`` tell digits from what is not a digit, and
does the flag find the wrong predictions on scans without flagging too much?

Digits: MNIST *test* images. Not digits: Fashion-MNIST test images (as 28x28 files), letters
and symbols drawn in OpenCV's fonts, noise pages, texture-like photos (tests/factories.py);
an input the preprocessing refuses (no ink) never reaches the model and is left out. For each,
AUROC (digits against that set) of three scores: the Mahalanobis distance the flag uses, the
energy of the logits, and 1 - the top softmax probability. Then, on all of MNIST test and on
scan sets (scan-like pages, harsh scans, thick marker, low resolution): accuracy, the share of
rows flagged and the share of wrong predictions the flag catches.

    .venv/bin/python bench/review_flag.py [--count 1000] [--scan-pages 3000] [--model models/mnist.keras]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from factories import HARD_SETS, NOT_DIGITS, scan_page  # noqa: E402
from hard_sets import taken  # noqa: E402

from worker import datasets, defaults  # noqa: E402
from worker.model import Classifier  # noqa: E402


def inputs(pages) -> np.ndarray:
    return taken(pages)[0]


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Chance a random outside input scores higher than a random inside one (ties count half):
    the Mann-Whitney U statistic on average ranks."""
    _, which, counts = np.unique(np.concatenate([inside, outside]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[which]
    n_in, n_out = len(inside), len(outside)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


class Scorer:
    def __init__(self, classifier: Classifier, model_path: Path) -> None:
        import keras

        self.classifier = classifier
        last = keras.saving.load_model(model_path, compile=False).layers[-1]
        self.kernel, self.bias = (np.asarray(w) for w in last.get_weights())

    def scores(self, x: np.ndarray) -> dict[str, np.ndarray]:
        probabilities, features = self.classifier.raw(x)
        logits = features @ self.kernel + self.bias
        top = logits.max(axis=1, keepdims=True)
        energy = -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
        return {"mahalanobis": self.classifier.flagger.distance(features), "energy": energy,
                "1 - softmax": 1 - probabilities.max(axis=1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--scan-pages", type=int, default=3000, help="scan-like pages to flag")
    parser.add_argument("--model", type=Path, default=defaults.MODEL)
    args = parser.parse_args()
    classifier = Classifier(args.model)
    if classifier.flagger is None or classifier.flagger.distance is None:
        sys.exit(f"{args.model} has no review flag: run 'worker calibrate --model {args.model}'")
    scorer = Scorer(classifier, args.model)
    mnist, rng = datasets.load("mnist"), np.random.default_rng(0)
    digits = scorer.scores(inputs(mnist.test_images[: args.count]))
    others = {"clothing (Fashion test)": list(datasets.load("fashion-mnist").test_images[: args.count])}
    others |= {name: [make(rng) for _ in range(args.count)] for name, make in NOT_DIGITS.items()}
    print(f"AUROC, {args.count} MNIST test digits against each set (inputs the preprocessing took)")
    print(f"{'set':<26}{'inputs':>7}{'mahalanobis':>13}{'energy':>9}{'1-softmax':>11}{'flagged':>9}")
    for name, pages in others.items():
        x = inputs(pages)
        scores = scorer.scores(x)
        flagged = np.mean([bool(r) for r in classifier.predict(x).reviews])
        print(f"{name:<26}{len(x):>7}" + "".join(f"{auroc(digits[k], scores[k]):>{w}.4f}" for k, w in
              (("mahalanobis", 13), ("energy", 9), ("1 - softmax", 11))) + f"{flagged:>9.1%}")
    print("\nthe flag on digits (accuracy, rows flagged, wrong predictions caught): all of MNIST test,")
    print(f"{args.scan_pages} scan-like pages, {args.count} of each hard set")
    print(f"{'set':<22}{'rows':>6}{'accuracy':>9}{'flagged':>9}{'wrong':>7}{'caught':>8}")
    labels = mnist.test_labels.astype(int)
    sets = {"MNIST test": list(mnist.test_images),
            "scan-like pages": [scan_page(d, rng) for d in mnist.test_images[: args.scan_pages]]}
    digits_shown = mnist.test_images[: args.count]
    sets |= {name: [make(d, rng) for d in digits_shown] for name, make in HARD_SETS.items()}
    for name, pages in sets.items():
        flag_line(name, classifier, pages, labels[: len(pages)])


def flag_line(name: str, classifier: Classifier, pages: list, labels: np.ndarray) -> None:
    x, kept = taken(pages)
    scored = classifier.predict(x)
    wrong = scored.probabilities.argmax(axis=1) != labels[kept]
    flagged = np.array([bool(r) for r in scored.reviews])
    caught = flagged[wrong].mean() if wrong.any() else float("nan")
    print(f"{name:<22}{len(pages):>6}{1 - wrong.mean():>9.1%}{flagged.mean():>9.1%}{int(wrong.sum()):>7}"
          f"{caught:>8.1%}")


if __name__ == "__main__":
    main()
