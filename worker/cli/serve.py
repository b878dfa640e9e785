"""``worker serve``: the web page, behind the checks that make it safe to open (an address
reachable from other machines needs a token, one listening everywhere names its Host)."""

import logging
from pathlib import Path
from typing import Annotated

import typer

from worker import defaults
from worker.cli.options import _env
from worker.cli.running import EXIT_CONFIG, _check_folder, _fail, _load_classifier, _need, _run


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
    _check_folder("inbox", inbox)
    _check_address(host, token, allowed_host)
    import uvicorn

    from worker.web.app import ServeSettings, create_app
    from worker.web.guard import served_names
    from worker.web.server import PageServer

    settings = _run(ServeSettings, inbox=inbox, outbox=outbox, token=token, host=host,
                    allowed_hosts=tuple(allowed_host or ()), reviewer=reviewer or _user_name())
    _check_folders(inbox, outbox)
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
        _log_access()
    server.run(sockets=[listening])
    if not server.started:
        raise _fail("the page did not start (the log above says why)")


def _check_address(host: str, token: str | None, allowed_host: list[str] | None) -> None:
    """Exit 78 unless an address other machines reach has a token, and one listening on every
    address names the Host the page is opened by."""
    import ipaddress

    from worker.web.guard import EVERY_ADDRESS

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not token:
        raise _fail(f"--host {host} is reachable from other machines: give a --token (or WORKER_TOKEN)", EXIT_CONFIG)
    if host in EVERY_ADDRESS and not allowed_host:
        raise _fail(f"--host {host} listens on every address: name the host clients will open the page by "
                    "with --allowed-host (requests naming any other are refused)", EXIT_CONFIG)


def _check_folders(inbox: Path, outbox: Path) -> None:
    """Exit 78 unless uploads can go into the inbox and reviews into the outbox (made if need be)."""
    from worker.daemon.settings import check_writable

    _run(check_writable, "inbox", inbox)  # uploads go there
    _run(check_writable, "outbox", outbox)  # reviews go there
    try:
        outbox.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"outbox {outbox} cannot be made: {exc.strerror or exc}", EXIT_CONFIG) from None


def _log_access() -> None:
    """uvicorn's access lines, at INFO, with any token in them hidden."""
    from worker.web.guard import HideTokens

    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO)
    access.addFilter(HideTokens())


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
