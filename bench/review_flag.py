"""The review flag, measured: does it tell digits from what is not a digit, does it flag a digit
read with a form's rule still attached, and does it find the wrong predictions on scans without
flagging too much?

Digits: MNIST *test* images. Not digits: Fashion-MNIST test images (as 28x28 files) and the same
clothing photographed on a backdrop, letters and symbols drawn in OpenCV's fonts and printed in
TrueType fonts (DejaVu, Liberation: letters, Greek, punctuation, check marks, crosses, arrows),
noise pages, photo-like scenes, two families of textures (tests/factories.py); an input the
preprocessing refuses (no ink) never reaches the model and is left out. For each, AUROC (digits
against that set) of three scores: the Mahalanobis distance the flag uses, the energy of the
logits, and 1 - the top softmax probability; the share flagged for any reason, for the ink's
shape (``odd-shape``) and for looking like printed letters (``not-a-digit``, fitted on letters
and symbols printed in other fonts than these). Then digits on forms whose rule runs into the ink
(``factories.rule_through``), read by digits-v4 (which keeps the rule: the model is given it
attached) and by digits-v5 (which takes most out). Then, on all of MNIST test and on scan sets:
accuracy, the share of rows flagged and the share of wrong predictions the flag catches. Last,
what the flag costs: the model and flag on MNIST test, with and without the ink's shape and
not-a-digit.

``--compare MODEL`` scores the same images with a second model too (in brackets): the same
weights with a card fitted by older code, say.

    .venv/bin/python bench/review_flag.py [--count 1000] [--scan-pages 3000] [--model models/mnist.keras]
        [--compare MODEL]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from factories import HARD_SETS, MORE_NOT_DIGITS, NOT_DIGITS, clothing_photo, rule_through, scan_page  # noqa: E402
from hard_sets import taken  # noqa: E402

from worker import defaults  # noqa: E402
from worker.model.classifier import Classifier  # noqa: E402
from worker.preprocess import DIGITS, DIGITS_V4  # noqa: E402
from worker.training import datasets  # noqa: E402


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
    parser.add_argument("--compare", type=Path, help="a second model, its figures in brackets")
    args = parser.parse_args()
    classifiers = [Classifier(path) for path in (args.model, args.compare) if path is not None]
    for classifier in classifiers:
        if classifier.flagger is None or classifier.flagger.distance is None:
            sys.exit(f"{classifier.path} has no review flag: "
                     f"run 'worker calibrate --model {classifier.path}'")
    mnist, rng = datasets.load("mnist"), np.random.default_rng(0)
    not_digits(args.count, classifiers, mnist, rng)
    rules_attached(args.count, classifiers, mnist, rng)
    print("\nthe flag on digits (accuracy, rows flagged, wrong predictions caught): all of MNIST test,")
    print(f"{args.scan_pages} scan-like pages, {args.count} of each hard set")
    print(f"{'set':<22}{'rows':>6}{'accuracy':>9}{'flagged':>18}{'wrong':>7}{'caught':>8}")
    labels = mnist.test_labels.astype(int)
    sets = {"MNIST test": list(mnist.test_images),
            "scan-like pages": [scan_page(d, rng) for d in mnist.test_images[: args.scan_pages]]}
    digits_shown = mnist.test_images[: args.count]
    sets |= {name: [make(d, rng) for d in digits_shown] for name, make in HARD_SETS.items()}
    for name, pages in sets.items():
        flag_line(name, classifiers, pages, labels[: len(pages)])
    cost(classifiers[0], inputs(list(mnist.test_images)))


def not_digits(count: int, classifiers: list[Classifier], mnist, rng) -> None:
    scorer = Scorer(classifiers[0], classifiers[0].path)
    digits = scorer.scores(inputs(mnist.test_images[:count]))
    fashion = datasets.load("fashion-mnist").test_images
    others = {"clothing (Fashion test)": list(fashion[:count]),
              "clothing photos": [clothing_photo(item, rng) for item in fashion[count : 2 * count]]}
    made = NOT_DIGITS | MORE_NOT_DIGITS
    others |= {name: [make(rng) for _ in range(count)] for name, make in made.items()}
    print(f"AUROC, {count} MNIST test digits against each set (inputs the preprocessing took)")
    print(f"{'set':<28}{'inputs':>7}{'mahalanobis':>13}{'energy':>9}{'1-softmax':>11}{'flagged':>18}"
          f"{'odd-shape':>18}{'not-a-digit':>18}")
    for name, pages in others.items():
        x = inputs(pages)
        scores = scorer.scores(x)
        print(f"{name:<28}{len(x):>7}" + "".join(f"{auroc(digits[k], scores[k]):>{w}.4f}" for k, w in
              (("mahalanobis", 13), ("energy", 9), ("1 - softmax", 11))) + shares(classifiers, x))


def rules_attached(count: int, classifiers: list[Classifier], mnist, rng) -> None:
    """Digits on forms whose rule runs into the ink, as digits-v4 gives them (the rule kept) and
    digits-v5 (most taken out)."""
    digits, labels = mnist.test_images[:count], mnist.test_labels[:count].astype(int)
    pages = [rule_through(d, rng) for d in digits]
    print(f"\n{count} digits on forms, a rule running into the ink (accuracy: the first model)")
    print(f"{'read by':<28}{'inputs':>7}{'accuracy':>9}{'flagged':>18}{'odd-shape':>18}{'not-a-digit':>18}")
    for profile in (DIGITS_V4, DIGITS):
        x, kept = taken(pages, profile)
        right = classifiers[0].predict(x).probabilities.argmax(axis=1) == labels[kept]
        print(f"{profile.name:<28}{len(x):>7}{right.mean():>9.1%}" + shares(classifiers, x))


def shares(classifiers: list[Classifier], x: np.ndarray) -> str:
    """The share of rows flagged, flagged for the ink's shape and as not a digit, by each model."""
    flagged, shaped, not_digit = [], [], []
    for classifier in classifiers:
        reviews = classifier.predict(x).reviews
        flagged.append(np.mean([bool(r) for r in reviews]))
        shaped.append(np.mean(["odd-shape" in r for r in reviews]))
        not_digit.append(np.mean(["not-a-digit" in r for r in reviews]))
    return "".join(f"{both(values):>18}" for values in (flagged, shaped, not_digit))


def both(values: list[float]) -> str:
    return f"{values[0]:.1%}" + (f" ({values[1]:.1%})" if len(values) > 1 else "")


def flag_line(name: str, classifiers: list[Classifier], pages: list, labels: np.ndarray) -> None:
    x, kept = taken(pages)
    flagged, caught = [], []
    for classifier in classifiers:
        scored = classifier.predict(x)
        wrong = scored.probabilities.argmax(axis=1) != labels[kept]
        rows = np.array([bool(r) for r in scored.reviews])
        flagged.append(rows.mean())
        caught.append(rows[wrong].mean() if wrong.any() else float("nan"))
        if len(flagged) == 1:
            accuracy, wrong_count = 1 - wrong.mean(), int(wrong.sum())
    print(f"{name:<22}{len(pages):>6}{accuracy:>9.1%}{both(flagged):>18}{wrong_count:>7}  {both(caught)}")


def cost(classifier: Classifier, x: np.ndarray, rounds: int = 5) -> None:
    """The model and the flag on MNIST test in batches of 100, with the ink's shape and
    not-a-digit and without, alternated; the best of ``rounds`` each (the machine is shared)."""
    flaggers = {"with the ink's shape and not-a-digit": classifier.flagger,
                "without": replace(classifier.flagger, odd_shape=None, not_digit=None)}
    best = dict.fromkeys(flaggers, np.inf)
    for _ in range(rounds):
        for label, flagger in flaggers.items():
            started = time.perf_counter()
            for i in range(0, len(x), 100):
                batch = x[i : i + 100]
                flagger(*classifier.raw(batch), batch)
            best[label] = min(best[label], time.perf_counter() - started)
    rate = {label: len(x) / seconds for label, seconds in best.items()}
    with_shape, without = rate.values()
    print(f"\nmodel and flag, {len(x)} inputs in batches of 100: "
          + ", ".join(f"{label} {r:,.0f} inputs/s" for label, r in rate.items())
          + f"; ratio {with_shape / without:.2f}x")


if __name__ == "__main__":
    main()
