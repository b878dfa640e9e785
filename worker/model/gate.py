"""The gate a model passes before it serves: no worse than what serves now.

A training run can go wrong (a learning rate far off, a broken extra folder, too few images)
and still write a model that loads and classifies its own check images. Published unchecked,
the running daemons would switch to it within a second. So ``worker train`` and ``worker
publish`` compare the candidate's card with the serving version's, on what their cards
measured on the test split:

- its test accuracy is not below the serving version's by more than ``tolerance`` points,
  where the two were measured on the same test split (same dataset, classes and split size);
- no class's recall collapses: below half the candidate's own accuracy (an 11 % MNIST model
  that calls everything a 1 has nine classes at 0), or down by more than ``RECALL_DROP`` from
  the serving version's recall of that class.

The check images every card carries are checked when a model is loaded (``model.py``), before
this. ``--force`` (``--publish always``) overrides the gate; the verdict says how.
"""

from __future__ import annotations

from dataclasses import dataclass

# What ``train --publish`` may say: publish if it passes the gate, always, or keep it unpublished.
PUBLISH_MODES = ("auto", "always", "never")
# Points of test accuracy a new version may lose against the serving one and still serve.
TOLERANCE_POINTS = 0.5
# A class whose recall falls this much below the serving version's has collapsed.
RECALL_DROP = 0.10


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # why not, or what it was compared with


def judge(candidate: dict, serving: dict | None, tolerance_points: float = TOLERANCE_POINTS) -> Verdict:
    """Whether the card ``candidate`` may replace ``serving`` (None: nothing serves yet)."""
    accuracy = float(candidate.get("test_accuracy", 0.0))
    recalls = _measured_recalls(candidate)
    collapsed = [name for name, recall in recalls.items() if recall < accuracy / 2]
    if collapsed:
        return Verdict(False, f"{_percent(accuracy)} on the test split, and class(es) "
                              f"{_names(collapsed)} almost never recognised")
    if serving is None or not comparable(candidate, serving):
        return Verdict(True, f"{_percent(accuracy)} on the test split (no serving version of the same split)")
    served = float(serving.get("test_accuracy", 0.0))
    if accuracy < served - tolerance_points / 100:
        return Verdict(False, f"{_percent(accuracy)} on the test split, the serving version has "
                              f"{_percent(served)} (more than {tolerance_points:g} points better)")
    served_recalls = serving.get("per_class_test_accuracy") or {}
    dropped = [name for name, recall in recalls.items()
               if recall < served_recalls.get(name, 0.0) - RECALL_DROP]
    if dropped:
        return Verdict(False, f"class(es) {_names(dropped)} recognised far less often than by the "
                              f"serving version (more than {RECALL_DROP * 100:g} points down)")
    return Verdict(True, f"{_percent(accuracy)} on the test split, the serving version has "
                         f"{_percent(served)}")


def _measured_recalls(card: dict) -> dict[str, float]:
    """Each class's test recall, less the classes the test split holds no image of (their
    recall of 0 says nothing: a folder dataset's test folders may lack a class)."""
    recalls = card.get("per_class_test_accuracy") or {}
    matrix = card.get("confusion_matrix")
    names = card.get("class_names") or list(recalls)
    if not matrix or len(matrix) != len(names):
        return dict(recalls)
    tested = {name for name, row in zip(names, matrix, strict=True) if sum(row) > 0}
    return {name: recall for name, recall in recalls.items() if name in tested}


def comparable(a: dict, b: dict) -> bool:
    """Both cards measured on the same test split: same dataset, classes and split size."""
    return (a.get("dataset") == b.get("dataset") and a.get("class_names") == b.get("class_names")
            and _split_size(a) == _split_size(b) is not None)


def _split_size(card: dict) -> int | None:
    matrix = card.get("confusion_matrix")
    return sum(map(sum, matrix)) if matrix else None


def _percent(accuracy: float) -> str:
    return f"{accuracy * 100:.2f} %"


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")
