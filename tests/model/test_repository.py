"""The model repository: shipped versions seed a fresh one, what serves is the operator's, and
training or publishing in a checkout changes no file git tracks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import TEST_USER, other_user_ids

from worker import defaults
from worker.model import publish
from worker.model.repository import SHIPPED, ensure_seeded, ensure_serving, shipped_version

REPO = Path(__file__).resolve().parents[2]
SHIPPED_MNIST = os.readlink(defaults.MODELS_DIR / "mnist" / SHIPPED)


def _fresh_models(tmp_path: Path) -> Path:
    """The checkout's models/ as a fresh clone has it: the tracked files, no ``current``."""
    tracked = subprocess.run(["git", "ls-files", "models"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked, "the shipped models are tracked"
    for name in tracked:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = REPO / name
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copyfile(source, target)
    return tmp_path / "models"


def test_git_tracks_the_shipped_versions_and_not_what_serves():
    tracked = subprocess.run(["git", "ls-files", "models"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert not [name for name in tracked if name.endswith("/current")], "current is the operator's"
    folders = {str(Path(name).parent) for name in tracked if name.endswith(".keras") and "/" in name[7:]}
    fashion = os.readlink(defaults.MODELS_DIR / "fashion-mnist" / SHIPPED)
    assert folders == {f"models/mnist/{SHIPPED_MNIST}", f"models/fashion-mnist/{fashion}"}, \
        "only the versions that ship are kept in git"


def test_a_fresh_clone_serves_the_shipped_version(tmp_path):
    models = _fresh_models(tmp_path)
    model = models / "mnist.keras"
    assert not model.exists(), "the links users name go through current, which is not tracked"

    ensure_serving(model, seeds=models)

    assert publish.current_version(model) == SHIPPED_MNIST
    assert model.is_file() and model.with_suffix(".json").is_file()


def test_the_first_command_on_a_fresh_clone_serves_it(tmp_path):
    models = _fresh_models(tmp_path)
    shutil.copytree(REPO / "worker", tmp_path / "worker")  # so that its defaults are this copy's
    done = subprocess.run([sys.executable, "-m", "worker", "predict", str(REPO / "samples" / "scan-7.jpg")],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1] == "7"
    assert f"the shipped version {SHIPPED_MNIST} serves" in done.stderr
    assert publish.current_version(models / "mnist.keras") == SHIPPED_MNIST


def test_worker_models_on_a_fresh_clone_names_the_version_that_will_serve(tmp_path):
    from worker.model.catalog import versions

    listed = versions(_fresh_models(tmp_path))
    assert [(v.model, v.serving) for v in listed] == [("fashion-mnist", True), ("mnist", True)]
    assert not (tmp_path / "models" / "mnist" / "current").exists(), "listing changes nothing"


def test_an_empty_repository_elsewhere_is_seeded_once(tmp_path):
    ensure_seeded(tmp_path)
    model = tmp_path / "mnist.keras"
    assert publish.current_version(model) == SHIPPED_MNIST
    assert (tmp_path / "fashion-mnist.keras").is_file()
    assert not (tmp_path / "mnist" / SHIPPED).exists(), "a copy, not a checkout: nothing of git's"
    card = (tmp_path / "mnist" / SHIPPED_MNIST / "mnist.json").stat()

    ensure_seeded(tmp_path)
    assert (tmp_path / "mnist" / SHIPPED_MNIST / "mnist.json").stat().st_mtime_ns == card.st_mtime_ns, \
        "seeded once: a second use copies nothing"


def test_what_the_operator_published_is_never_replaced_by_the_seed(tmp_path):
    ensure_seeded(tmp_path)
    model = tmp_path / "mnist.keras"
    other = publish.add_version(shipped_version("mnist") / "mnist.keras", model, "rolled-back")
    publish.publish(other, model)

    ensure_serving(model)
    assert publish.current_version(model) == "rolled-back"

    shutil.rmtree(other.parent)  # what serves is gone: loading says so, the seed does not hide it
    ensure_serving(model)
    assert publish.current_version(model) == "rolled-back" and not model.exists()


@pytest.mark.slow
def test_a_repository_its_user_cannot_write_is_one_line_exit_78():
    """The service's user on a models folder root made and left empty: one line saying what to
    do, not a PermissionError traceback."""
    ids = other_user_ids()
    if ids is None or os.geteuid() != 0:
        pytest.skip(f"needs root and the user {TEST_USER} (made by ./scripts/test)")
    root = Path(tempfile.mkdtemp())
    try:
        root.chmod(0o755)
        done = subprocess.run(
            ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups", sys.executable, "-m",
             "worker", "publish", str(shipped_version("mnist")), "--model", str(root / "mnist.keras")],
            capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": "/tmp"})
        assert done.returncode == 78, done.stderr
        assert "cannot be set up here" in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    finally:
        shutil.rmtree(root)


def test_a_daemon_given_a_path_elsewhere_that_holds_nothing_is_told_so_not_handed_the_seed(tmp_path):
    """A mistyped --model, or a repository on a share not mounted yet: the shipped model is
    not copied there behind the operator's back (only train and publish, which write to a
    repository by intent, seed one), and no folder is made on the way."""
    from worker.errors import ModelError
    from worker.model.classifier import Classifier

    with pytest.raises(ModelError, match="does not exist"):
        Classifier(tmp_path / "mnist.keras")
    with pytest.raises(ModelError, match="does not exist"):
        Classifier(tmp_path / "typo" / "mnist.keras")
    assert list(tmp_path.iterdir()) == []


def test_unknown_names_are_left_to_loading(tmp_path):
    ensure_serving(tmp_path / "mine.keras")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_training_and_publishing_in_a_checkout_leave_git_status_clean(tmp_path):
    """A scratch checkout (this tree's package, models and .gitignore, committed), then the
    README's train and publish commands in it."""
    checkout = tmp_path / "checkout"
    _fresh_models(checkout)
    shutil.copytree(REPO / "worker", checkout / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(REPO / ".gitignore", checkout / ".gitignore")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(checkout)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "checkout"], check=True)
    env = {**os.environ, "PYTHONPATH": str(checkout), "TF_CPP_MIN_LOG_LEVEL": "3"}

    def worker(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "worker", *args], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    worker("train", "--arch", "seed-cnn", "--epochs", "1", "--limit", "2000", "--publish", "always")
    trained = publish.current_version(checkout / "models" / "mnist.keras")
    assert trained and trained != SHIPPED_MNIST
    worker("publish", str(checkout / "models" / "mnist" / SHIPPED_MNIST))  # the roll-back

    status = subprocess.run([*git, "status", "--porcelain", "--ignored=no"], capture_output=True,
                            text=True, check=True).stdout
    assert status == "", f"training and publishing changed what git tracks:\n{status}"
    assert publish.current_version(checkout / "models" / "mnist.keras") == SHIPPED_MNIST
    assert (checkout / "models" / "mnist" / trained).is_dir(), "the trained version is kept, untracked"
