"""``worker status``: what is going on, read from the folders alone, no daemon needed.

Daemons alive (a daemon holds an ``flock`` on ``.work/<id>.lock`` for its whole life: a lock we
can take belongs to a dead one) and the model each serves (written in its lock file), files
claimed in ``.work/``, files waiting in the inbox, the last row written, and today's failures by
kind.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from worker.daemon.daemon_lock import read_about, take_lock
from worker.daemon.watch import ignore_patterns, scan
from worker.daemon.work_folder import WORK_DIR
from worker.errors import ConfigError, unreadable
from worker.outbox.lines import error_record_from, row_from
from worker.outbox.records import ERROR_SUFFIX, FAILED_DIR, JSONL_NAME

# The last row is found in the file's last bytes: a row is well under this.
TAIL_BYTES = 64 * 1024
LAST_ROW_FIELDS = ("file", "label", "confidence", "processed_at", "model_version")


def status(inbox: Path, outbox: Path, *, recursive: bool = False, ignore: tuple[str, ...] = (),
           failures: bool = True) -> dict:
    """What the folders say; a ConfigError if this user may not read them (a count of none
    would tell them no daemon runs). Files ``ignore`` names (the daemons' ``--ignore``) are not
    counted as waiting. ``failures=False`` leaves out ``failed_today``, which reads every error
    record (the web page keeps its own count, from the records as they come)."""
    try:
        return _status(Path(inbox), Path(outbox), recursive, ignore, failures)
    except PermissionError as exc:
        raise unreadable(exc) from None


def _status(inbox: Path, outbox: Path, recursive: bool, ignore: tuple[str, ...], failures: bool) -> dict:
    if not inbox.is_dir():
        raise ConfigError(f"inbox {inbox} is not a folder")
    alive, dead = _daemons(inbox / WORK_DIR)
    today = datetime.now(timezone.utc).date().isoformat()
    found = {
        "inbox": str(inbox),
        "outbox": str(outbox),
        "daemons_alive": len(alive),
        "daemons": alive,
        "daemons_dead_with_claims": dead,
        "claimed": _claimed(inbox / WORK_DIR),
        "waiting": sum(1 for _ in scan(inbox, recursive, ignore_patterns(ignore))),
        "last_row": _last_row(outbox / JSONL_NAME),
    }
    if failures:
        found["failed_today"] = dict(Counter(_failures_on(outbox / FAILED_DIR, today)))
    return found


def _daemons(work: Path) -> tuple[list[dict], int]:
    """The live daemons (id, and what each said of itself: pid, model, model_version, since),
    and how many dead ones left their lock."""
    alive, dead = [], 0
    for lock in sorted(os.listdir(work)) if work.is_dir() else []:
        if not lock.endswith(".lock"):
            continue
        try:
            fd = take_lock(work / lock, shared=True)
            about = read_about(work / lock) if fd is None else {}
        except PermissionError:
            raise
        except OSError:
            continue
        if fd is None:
            alive.append({"id": lock.removesuffix(".lock"), **about})
        else:
            dead += 1
            os.close(fd)
    return alive, dead


def _claimed(work: Path) -> int:
    if not work.is_dir():
        return 0
    return sum(len(names) for root, _, names in os.walk(work) if Path(root) != work)


def _last_row(path: Path) -> dict | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - TAIL_BYTES))
            lines = fh.read().splitlines()
    except PermissionError:
        raise
    except OSError:
        return None
    for line in reversed(lines):
        row = row_from(line)  # None for a torn last line, the cut-off first one, or damage
        if row is not None:
            return {key: row.get(key) for key in LAST_ROW_FIELDS}
    return None


def _failures_on(failed: Path, day: str):
    for path in failed.rglob(f"*{ERROR_SUFFIX}") if failed.is_dir() else []:
        try:
            record = error_record_from(path.read_bytes())
        except OSError:
            continue
        if record is not None and record.get("time", "").startswith(day):
            yield record["kind"]


def format_status(report: dict) -> str:
    last = report["last_row"]
    lines = [
        f"inbox {report['inbox']}: {report['daemons_alive']} daemon(s) alive, "
        f"{report['claimed']} file(s) claimed, {report['waiting']} waiting",
        f"outbox {report['outbox']}: last row "
        + (f"{last['file']} -> {last['label']} at {last['processed_at']}" if last else "none yet"),
    ]
    lines[1:1] = [_daemon_line(daemon) for daemon in report["daemons"]]
    if report["daemons_dead_with_claims"]:
        lines.append(f"{report['daemons_dead_with_claims']} stopped daemon(s) left claims: "
                     "the next start finishes them")
    failed = ", ".join(f"{kind} {n}" for kind, n in sorted(report["failed_today"].items()))
    lines.append(f"failed today: {failed or 'none'}")
    if "broker" in report:
        lines.append(_format_broker(report["broker"]))
    return "\n".join(lines)


def _daemon_line(daemon: dict) -> str:
    if "model" not in daemon:
        return f"  daemon {daemon['id']}: model not recorded (a daemon from before status showed it)"
    return (f"  daemon {daemon['id']}: model {daemon['model']} version {daemon.get('model_version', '?')}"
            f" since {daemon.get('since', '?')}, pid {daemon.get('pid', '?')}")


def _format_broker(broker: dict) -> str:
    if not broker["reachable"]:
        return f"broker {broker['url']}: unreachable ({broker['error']}); batches wait in the watcher"
    busy = sum(w["batch"] is not None for w in broker["workers"])
    line = (f"broker {broker['url']}: {len(broker['workers'])} classify worker process(es) alive "
            f"({busy} busy), {broker['queued']} batch(es) queued")
    if not broker["workers"]:
        line += "; no worker: the backlog grows until one starts"
    return line
