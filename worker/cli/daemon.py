"""The daemon commands: ``watch`` (the daemon), ``classify-worker`` (remote mode's workers) and
``status`` (which daemons are alive, what waits)."""

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from worker import defaults
from worker.cli.options import BrokerKeyFileOption, BrokerUrlFileOption, ModelFileOption, _env
from worker.cli.running import (
    EXIT_CONFIG,
    EXIT_NOT_RUNNING,
    _check_folder,
    _fail,
    _load_classifier,
    _need,
    _run,
)
from worker.remote.broker import VISIBILITY_TIMEOUT

log = logging.getLogger("worker")

OnSuccess = Enum("OnSuccess", {name: name for name in defaults.ON_SUCCESS}, type=str)

CLOSE_SETTLE_HELP = ("A file its writer closed is ready once it stayed closed and unchanged this long (s), "
                     "for scanners that close a file between pages; 0: at its close. A file moved in "
                     "is ready at once all the same.")
IGNORE_HELP = ("Leave alone files whose name matches this glob (case ignored), besides the built-in list "
               "(*.part, *.tmp, *.crdownload, *.download, *.filepart, *.!sync, ~$*, hidden files...). "
               "Repeat for more; WORKER_IGNORE holds several, separated by spaces.")


def watch(
    inbox: Annotated[Path, typer.Option(envvar=_env("inbox"), help="Folder to watch.")] = defaults.INBOX,
    outbox: Annotated[Path, typer.Option(envvar=_env("outbox"), help="Folder for predictions, processed/ and failed/.")] = defaults.OUTBOX,
    model: ModelFileOption = defaults.MODEL,
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
    broker_url_file: BrokerUrlFileOption = None,
    broker_key_file: BrokerKeyFileOption = None,
    in_flight: Annotated[int, typer.Option(envvar=_env("in_flight"), help="With --broker: most batches out with the workers at a time.")] = defaults.IN_FLIGHT,
    resend_after: Annotated[float, typer.Option(envvar=_env("resend_after"), help="With --broker: a batch without an answer this many seconds is sent again.")] = defaults.RESEND_SECONDS,
) -> None:
    """Watch the inbox and classify every image dropped into it (the daemon)."""
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
    _run_daemon(settings, model, metrics, metrics_file, broker_key)


def _run_daemon(settings, model: Path, metrics: str | None, metrics_file: Path | None,
                broker_key: bytes | None) -> None:
    """Load the model, start the metrics, run the daemon until a signal stops it."""
    from worker.daemon.loop import Daemon
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


def _pipeline(settings, key: bytes | None):
    """What makes the daemon's pipeline: its own (the model in this process), or with --broker
    the remote mode's, through the watcher's Redis connection (Celery is imported only then)."""
    if settings.broker is None:
        from worker.daemon.pipeline import Pipeline

        return Pipeline
    from worker.remote.connection import Broker
    from worker.remote.watcher import remote_pipeline

    return remote_pipeline(_run(Broker, settings.broker, key=key), settings)


def classify_worker(
    broker: Annotated[str | None, typer.Option(envvar=_env("broker"), help="Redis URL the watcher sends batches to (redis://HOST:6379/0). With a password, use WORKER_BROKER or --broker-url-file.")] = None,
    broker_url_file: BrokerUrlFileOption = None,
    broker_key_file: BrokerKeyFileOption = None,
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

    _check_folder("--models", models)
    if not os.access(models, os.R_OK | os.X_OK):  # its versions are read as tasks name them
        raise _fail(f"--models {models} is not readable by this user", EXIT_CONFIG)
    broker, key = _broker_options("worker classify-worker", broker, broker_url_file, broker_key_file)
    if broker is None:
        raise _fail("give the Redis URL: WORKER_BROKER, --broker-url-file or --broker", EXIT_CONFIG)
    _run(run, broker, models=models, concurrency=concurrency, threads=threads,
         visibility_timeout=visibility_timeout, batch_seconds=batch_timeout, key=key, loglevel=loglevel)


def status(
    inbox: Annotated[Path, typer.Option(envvar=_env("inbox"), readable=False, help="The inbox the daemons watch.")] = defaults.INBOX,
    outbox: Annotated[Path, typer.Option(envvar=_env("outbox"), readable=False, help="Their outbox.")] = defaults.OUTBOX,
    recursive: Annotated[bool, typer.Option(envvar=_env("recursive"), help="Count waiting files in subfolders too.")] = False,
    ignore: Annotated[list[str] | None, typer.Option(envvar=_env("ignore"), metavar="GLOB", help="Do not count files whose name matches this glob, as the daemons' --ignore.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of lines.")] = False,
    broker: Annotated[str | None, typer.Option(envvar=_env("broker"), help="Also ask this Redis which classify worker processes are alive (by their heartbeat) and how many batches wait.")] = None,
    broker_url_file: BrokerUrlFileOption = None,
    broker_key_file: BrokerKeyFileOption = None,
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
