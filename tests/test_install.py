"""``scripts/install-service`` end to end, into a scratch root (``--root``): the accounts go into
that root's ``etc/passwd`` and ``etc/group`` (``useradd --prefix``), seeded from this machine's as
a real host has them, so this machine's accounts are never touched; the venv is a real one on
Debian's ``/usr/bin/python3`` with this checkout pip-installed. Then the installed units are
checked by systemd-analyze, and the installed daemon is started as the unit would start it (its
ExecStart, Environment, user, groups and UMask, with no network and no privileges) and takes a
file a member of group scanner drops.

The install itself runs once for the module (pip: a minute), hence ``slow``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import REPO, rows
from factories import digit_stroke, wait_for, write

SCRIPT = REPO / "scripts" / "install-service"
SYSTEM_PYTHON = Path("/usr/bin/python3")
NOBODY = 65534  # the scanner's uid: any account but the daemon's
INSTALLED_UNITS = ["worker.service", "worker@digits.service", "worker-serve.service",
                   "worker-classify.service"]


def _install(root: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "--root", str(root), *options], capture_output=True, text=True,
                          timeout=900)


def _venv_module(python: Path) -> bool:
    """Debian splits ``venv``'s ensurepip into python3-venv."""
    if not python.is_file():
        return False
    return subprocess.run([str(python), "-c", "import ensurepip"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def installed():
    if os.geteuid() != 0 or not shutil.which("useradd") or not _venv_module(SYSTEM_PYTHON):
        pytest.skip("needs root, useradd and Debian's /usr/bin/python3 with python3-venv "
                    "(./scripts/test installs it)")
    root = Path(tempfile.mkdtemp(prefix="worker-install-", dir="/tmp"))
    os.chmod(root, 0o755)  # the service's user walks down to its venv and folders
    (root / "etc").mkdir()
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", root / "etc" / name)
    result = _install(root, "--instance", "digits", "--metrics")
    assert result.returncode == 0, result.stdout + result.stderr
    yield root, result.stdout
    shutil.rmtree(root, ignore_errors=True)


def _account(root: Path, table: str, name: str) -> list[str]:
    for line in (root / "etc" / table).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise AssertionError(f"no {name} in {root}/etc/{table}")


def _ids(root: Path) -> dict[str, int]:
    return {"worker": int(_account(root, "passwd", "worker")[2]), "root": 0,
            "group worker": int(_account(root, "group", "worker")[2]),
            "group scanner": int(_account(root, "group", "scanner")[2])}


def _owner_and_mode(path: Path) -> tuple[int, int, str]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid, format(info.st_mode & 0o7777, "o")


def _tree(root: Path) -> dict[str, tuple]:
    """Every path the install made, with owner, mode, size and mtime: what a second run must keep."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            info = os.lstat(os.path.join(folder, name))
            seen[os.path.join(folder, name)] = (info.st_uid, info.st_gid, info.st_mode, info.st_size,
                                                info.st_mtime_ns)
    return seen


@pytest.mark.slow
def test_the_install_makes_accounts_code_folders_and_units(installed):
    root, output = installed
    ids = _ids(root)
    assert "worker" in _account(root, "group", "scanner")[3].split(","), "the daemon reads what scanners drop"
    assert _account(root, "passwd", "worker")[6] == "/usr/sbin/nologin"
    data = root / "var/lib/worker"
    assert _owner_and_mode(data) == (0, 0, "755")
    assert _owner_and_mode(data / "inbox") == (ids["worker"], ids["group scanner"], "3770")
    assert _owner_and_mode(data / "outbox") == (ids["worker"], ids["group worker"], "750")
    assert _owner_and_mode(data / "digits" / "inbox") == (ids["worker"], ids["group scanner"], "3770")
    assert _owner_and_mode(data / "models") == (0, ids["group worker"], "750")
    assert _owner_and_mode(root / "etc/worker") == (0, ids["group worker"], "750")
    assert os.readlink(data / "models/mnist/current") == os.readlink(REPO / "models/mnist/shipped")
    assert (data / "models/mnist.keras").resolve().is_file()
    venv = root / "opt/worker/venv"
    assert "home = /usr/bin\n" in (venv / "pyvenv.cfg").read_text(), "the system's python3, not root's own"
    for unit in ("worker.service", "worker@.service", "worker-serve.service", "worker-classify.service"):
        assert (root / "etc/systemd/system" / unit).read_text() == (REPO / "deploy" / unit).read_text()
    assert (root / "etc/systemd/system/worker.service.d/metrics.conf").is_file()
    share = root / "opt/worker/share"
    assert (share / "docs/service.md").read_text() == (REPO / "docs/service.md").read_text(), "linked"
    assert not (root / "etc/systemd/system/worker.service.d/broker.conf").exists(), "only when asked for"
    assert "systemctl: skipped" in output


@pytest.mark.slow
def test_the_installed_command_runs_with_the_services_folders(installed):
    root, _ = installed
    command = root / "usr/local/bin/worker"
    text = command.read_text()
    assert "WORKER_INBOX:=/var/lib/worker/inbox" in text and "exec /opt/worker/venv/bin/worker" in text
    result = subprocess.run([str(root / "opt/worker/venv/bin/worker"), "models", "--models",
                             str(root / "var/lib/worker/models")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mnist" in result.stdout and "fashion-mnist" in result.stdout


@pytest.mark.slow
def test_the_venv_has_the_extras_the_units_need_and_not_training(installed):
    """The page (web), PDF and HEIC (documents), the classify unit and --broker (broker); not
    TensorFlow, which only training needs."""
    root, _ = installed
    check = "import sys; from worker.extras import installed; print(*(installed(e) for e in sys.argv[1:]))"
    python = root / "opt/worker/venv/bin/python"
    result = subprocess.run([str(python), "-c", check, "web", "documents", "broker", "train"],
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["True", "True", "True", "False"], result.stdout + result.stderr


def _verify(root: Path, unit: str) -> str:
    """systemd-analyze verify of an installed unit, with its drop-ins, the complaint that its
    ExecStart is not on this machine's / left out (it is under the scratch root: checked there)."""
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{root}/etc/systemd/system:"}
    result = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True, env=env)
    missing = re.compile(r"Command (/opt/worker/venv/bin/worker) is not executable")
    left = []
    for line in result.stderr.splitlines():
        found = missing.search(line)
        if found:
            assert os.access(root / found.group(1).lstrip("/"), os.X_OK), line
        else:
            left.append(line)
    return "\n".join(left)


@pytest.mark.slow
@pytest.mark.parametrize("unit", INSTALLED_UNITS)
def test_systemd_analyze_verifies_each_installed_unit(installed, unit):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed (./scripts/test installs it)")
    root, _ = installed
    assert _verify(root, unit) == ""


@pytest.mark.slow
@pytest.mark.parametrize("unit", INSTALLED_UNITS)
def test_each_installed_unit_with_its_drop_ins_is_hardened_to_2_or_less(installed, unit):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed (./scripts/test installs it)")
    root, _ = installed
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{root}/etc/systemd/system:"}
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", unit], capture_output=True,
                            text=True, env=env)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    print(f"{unit}: {score.group(1)}")
    assert float(score.group(1)) <= 2.0, result.stdout


def _service(root: Path, unit: str = "worker.service") -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    text = (root / "etc/systemd/system" / unit).read_text()
    for line in text[text.index("[Service]"):text.index("[Install]")].splitlines()[1:]:
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            seen.setdefault(key, []).append(value)
    return seen


def _under(root: Path, value: str) -> str:
    """An absolute path of the unit's, as it is under the scratch root."""
    return re.sub(r"(^|[ =])/(opt|var|etc)/", lambda m: f"{m.group(1)}{root}/{m.group(2)}/", value)


def _start_as_installed(root: Path, unit: str, *, network: bool, env: dict[str, str],
                        args: tuple[str, ...] | list[str] = ()) -> tuple[subprocess.Popen, dict[str, str]]:
    """The installed unit's ExecStart as systemd would start it: its Environment= only (paths
    under the scratch root), its user with the groups the root's etc/group gives it (what
    initgroups() does), its UMask=, no new privileges, no capabilities, and no network unless
    the unit has one. Returns the process and the unit's environment."""
    ids = _ids(root)
    service = _service(root, unit)
    assert service["User"] == ["worker"] and service["Group"] == ["worker"]
    environment = dict(pair.split("=", 1) for value in service["Environment"] for pair in value.split())
    environment = {key: _under(root, value) for key, value in environment.items()}
    groups = f"{ids['group worker']},{ids['group scanner']}"
    sandbox = [] if network else ["unshare", "--net"]
    sandbox += ["setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
                f"--reuid={ids['worker']}", f"--regid={ids['group worker']}", f"--groups={groups}"]
    [umask], [exec_start], [folder] = service["UMask"], service["ExecStart"], service["WorkingDirectory"]
    command = [*sandbox, "sh", "-c", f'umask {umask} && exec "$@"', "sh", *_under(root, exec_start).split(),
               *args]
    full_env = {"PATH": "/usr/bin:/bin", "HOME": str(root / "var/lib/worker"), "USER": "worker",
                "LOGNAME": "worker", **environment, **env}
    process = subprocess.Popen(command, env=full_env, cwd=_under(root, folder), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process, environment


@pytest.mark.slow
def test_the_installed_unit_runs_the_installed_daemon_which_takes_a_scanners_drop(installed):
    """As systemd would run it: the unit's ExecStart (the venv's script on /usr/bin/python3), its
    Environment only, its User and the user's groups (worker and scanner), its UMask, no network,
    no new privileges, no capabilities; a member of group scanner drops a file with umask 027."""
    if not shutil.which("unshare") or not shutil.which("setpriv"):
        pytest.skip("needs unshare and setpriv to build the sandbox")
    root, _ = installed
    ids = _ids(root)
    notify_path = root / "var/lib/worker/notify"  # where the daemon's user may reach it
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    os.chown(notify_path, ids["worker"], ids["group worker"])
    notify.settimeout(120)
    daemon, environment = _start_as_installed(root, "worker.service", network=False,
                                              env={"NOTIFY_SOCKET": str(notify_path)}, args=["--settle", "0"])
    inbox, outbox = Path(environment["WORKER_INBOX"]), Path(environment["WORKER_OUTBOX"])
    try:
        ready = notify.recv(4096)
        assert b"READY=1" in ready, ready
        scan = write(root / "scan.png", 255 - digit_stroke(100))  # where the scanner may read it
        scanner = ["setpriv", f"--reuid={NOBODY}", f"--regid={ids['group scanner']}", "--clear-groups"]
        dropped = subprocess.run([*scanner, "sh", "-c", f"umask 027 && cp {scan} {inbox}/one.png"],
                                 capture_output=True, text=True)
        assert dropped.returncode == 0, dropped.stderr
        assert wait_for(lambda: (outbox / "processed" / "one.png").exists(), 60)
        stranger = subprocess.run([*scanner, "ls", str(outbox)], capture_output=True, text=True)
        assert stranger.returncode != 0, "a scanner has no access to the outbox"
        reader = ["setpriv", f"--reuid={NOBODY}", f"--regid={ids['group worker']}", "--clear-groups"]
        read = subprocess.run([*reader, "cat", str(outbox / "predictions.csv")], capture_output=True,
                              text=True)
        assert read.returncode == 0 and "\none.png," in read.stdout, read.stdout + read.stderr
        daemon.send_signal(signal.SIGTERM)
        output = daemon.communicate(timeout=60)[0]
        assert daemon.returncode == 0, output
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        notify.close()
        notify_path.unlink(missing_ok=True)
    assert _owner_and_mode(outbox / "predictions.csv") == (ids["worker"], ids["group worker"], "640")
    assert _owner_and_mode(inbox / ".work")[:2] == (ids["worker"], ids["group scanner"])


@pytest.mark.slow
def test_the_installed_page_unit_shows_the_outbox_and_drops_uploads_into_the_inbox(installed):
    """worker-serve.service's ExecStart as its user (the network kept: it serves loopback),
    after the watcher's test: the rows of the outbox are on the page (the watcher's test wrote
    one), an upload lands in the inbox as the service's file of group scanner (the setgid
    inbox), readable by the watcher."""
    import httpx
    from services import free_port

    root, _ = installed
    ids = _ids(root)
    port = free_port()
    page, environment = _start_as_installed(root, "worker-serve.service", network=True,
                                            env={"WORKER_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/api/model", timeout=2).status_code == 200
        except httpx.TransportError:
            return page.poll() is not None

    try:
        if not wait_for(answers, 60) or page.poll() is not None:
            page.terminate()
            pytest.fail(f"the page did not start: {page.communicate(timeout=30)[0]}")
        latest = httpx.get(f"{url}/api/latest", timeout=10).json()
        written = [row["file"] for row in rows(Path(environment["WORKER_OUTBOX"]))]
        assert sorted(row["file"] for row in latest["rows"]) == sorted(written), latest
        png = write(root / "upload.png", 255 - digit_stroke(100)).read_bytes()
        dropped = httpx.post(f"{url}/api/inbox", files={"files": ("up.png", png, "image/png")}, timeout=10)
        assert dropped.status_code == 201, dropped.text
        [name] = dropped.json()["names"]
    finally:
        page.terminate()
        output = page.communicate(timeout=30)[0]
    assert page.returncode in (0, -signal.SIGTERM), output
    inbox = Path(environment["WORKER_INBOX"])
    assert _owner_and_mode(inbox / name) == (ids["worker"], ids["group scanner"], "640")
    (inbox / name).unlink()


@pytest.mark.slow
def test_a_second_run_changes_nothing_and_says_so(installed):
    root, _ = installed
    before = _tree(root)
    result = _install(root, "--instance", "digits", "--metrics")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("nothing changed: already installed from this checkout"), \
        result.stdout
    assert _tree(root) == before


@pytest.mark.slow
def test_a_run_repairs_modes_and_keeps_the_operators_model_settings_and_edits(installed):
    root, _ = installed
    models = root / "var/lib/worker/models"
    published = "operators-own"  # a version the operator trained or copied in
    shipped = models / "mnist" / os.readlink(models / "mnist" / "current")
    shutil.copytree(shipped, models / "mnist" / published)
    os.symlink(published, models / "mnist" / "current.new")
    os.replace(models / "mnist" / "current.new", models / "mnist" / "current")  # as worker publish does
    (root / "etc/worker/env").write_text("WORKER_RECURSIVE=true\n")
    os.chmod(root / "var/lib/worker/outbox", 0o777)
    unit = root / "etc/systemd/system/worker.service"
    edited = unit.read_text() + "Nice=5\n"  # edited in place instead of in a drop-in
    unit.write_text(edited)
    result = _install(root, "--instance", "digits", "--metrics")
    assert result.returncode == 0, result.stderr
    assert "/var/lib/worker/outbox: now worker:worker 750" in result.stdout, result.stdout
    assert "kept as worker.service.old" in result.stdout, result.stdout
    assert "3 change(s)" in result.stdout, result.stdout  # the mode, the unit and its copy
    assert unit.with_name("worker.service.old").read_text() == edited
    assert unit.read_text() == (REPO / "deploy/worker.service").read_text()
    assert _owner_and_mode(root / "var/lib/worker/outbox")[2] == "750"
    assert os.readlink(models / "mnist" / "current") == published, "the published version keeps serving"
    assert (root / "etc/worker/env").read_text() == "WORKER_RECURSIVE=true\n"


@pytest.mark.slow
def test_an_upgrade_from_a_changed_checkout_rebuilds_the_venv_with_the_new_code(installed, tmp_path):
    """The checkout pulled (here: a copy with one line more in the package): the venv is built
    again from it, and said so; nothing else changes."""
    root, _ = installed
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("scripts", "deploy", "docs", "worker", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, checkout / name)
    (checkout / "models").symlink_to(REPO / "models")
    marker = "# upgraded by the install test\n"
    with open(checkout / "worker" / "__init__.py", "a") as init:
        init.write(marker)
    result = subprocess.run([str(checkout / "scripts" / "install-service"), "--root", str(root), "--instance",
                             "digits", "--metrics"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    said = [line.split(":")[0].strip() for line in result.stdout.splitlines()
            if line.startswith("  ") and "(as it was)" not in line]
    assert said == ["/opt/worker/venv", "systemctl"], result.stdout
    [installed_init] = (root / "opt/worker/venv/lib").glob("python3*/site-packages/worker/__init__.py")
    assert installed_init.read_text().endswith(marker)


@pytest.mark.slow
def test_uninstall_removes_code_and_units_and_keeps_data_config_and_accounts(installed):
    """Last of the module: the install is gone after it."""
    root, _ = installed
    write(root / "var/lib/worker/outbox/kept.png", digit_stroke())
    result = _install(root, "--uninstall")
    assert result.returncode == 0, result.stderr
    for gone in ("opt/worker", "usr/local/bin/worker", "etc/systemd/system/worker.service",
                 "etc/systemd/system/worker-serve.service", "etc/systemd/system/worker.service.d"):
        assert not (root / gone).exists(), gone
    for kept in ("var/lib/worker/outbox/kept.png", "var/lib/worker/models/mnist.keras", "etc/worker/env"):
        assert (root / kept).exists(), kept
    assert _account(root, "passwd", "worker")
    again = _install(root, "--uninstall")
    assert again.returncode == 0 and "nothing to remove" in again.stdout, again.stdout


def test_the_script_refuses_what_it_does_not_know():
    result = subprocess.run([str(SCRIPT), "--frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown option --frobnicate" in result.stderr
    result = subprocess.run([str(SCRIPT), "--user", "../etc"], capture_output=True, text=True)
    assert result.returncode == 2 and "no plain name" in result.stderr
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--uninstall" in result.stdout


ON_THE_HOST = """set -e
for dir in /etc /opt /var/lib /usr/local/bin; do
  layer="$SCRATCH/$(echo "$dir" | tr / _)"
  mkdir -p "$layer/upper" "$layer/work"
  mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done
"$SCRIPT" --instance digits >"$SCRATCH/first.txt"
"$SCRIPT" --instance digits >"$SCRATCH/second.txt"
getent passwd worker >"$SCRATCH/account.txt"
head -n 1 /opt/worker/venv/bin/worker >"$SCRATCH/shebang.txt"
setpriv --reuid=worker --regid=worker --init-groups sh -c 'umask 027 && id -Gn && worker models' \
  >"$SCRATCH/as-worker.txt"
worker status >"$SCRATCH/status.txt" || echo "$?" >"$SCRATCH/status.rc"
"$SCRIPT" --uninstall >"$SCRATCH/uninstall.txt"
test ! -e /opt/worker && test ! -e /usr/local/bin/worker && test -d /var/lib/worker/inbox
"""


@pytest.mark.slow
def test_the_install_on_the_host_itself_in_a_mount_namespace(tmp_path):
    """Without --root, as on a host: real paths, NSS, plain useradd, the venv's scripts naming
    /opt/worker/venv. In a mount namespace whose /etc, /opt, /var/lib and /usr/local/bin are
    overlays on this machine's, so every write (accounts too) lands in scratch layers and this
    machine is left as it was. systemd is not PID 1 here: the script says so and skips it."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not _venv_module(SYSTEM_PYTHON):
        pytest.skip("needs root, unshare and Debian's python3 with python3-venv")
    accounts = Path("/etc/passwd").read_bytes(), Path("/etc/group").read_bytes()
    env = {"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SCRATCH": str(tmp_path),
           "SCRIPT": str(SCRIPT)}
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", ON_THE_HOST],
                            capture_output=True, text=True, timeout=900, env=env)
    if "overlay" in result.stderr and not (tmp_path / "first.txt").exists():
        pytest.skip(f"no overlay mounts here: {result.stderr}")
    assert result.returncode == 0, result.stderr

    def said(name: str) -> str:
        return (tmp_path / name).read_text()

    assert "systemctl: skipped (systemd is not running here" in said("first.txt")
    assert "user worker: created" in said("first.txt")
    assert said("second.txt").rstrip().endswith("nothing changed: already installed from this checkout")
    assert said("account.txt").split(":")[5:] == ["/var/lib/worker", "/usr/sbin/nologin\n"]
    assert said("shebang.txt") == "#!/opt/worker/venv/bin/python3\n"
    groups, *models = said("as-worker.txt").splitlines()
    assert groups.split() == ["worker", "scanner"] and "mnist" in "\n".join(models)
    assert said("status.rc").strip() == "3" and "/var/lib/worker/inbox" in said("status.txt")
    assert "removed /opt/worker/venv" in said("uninstall.txt")
    assert (Path("/etc/passwd").read_bytes(), Path("/etc/group").read_bytes()) == accounts, \
        "this machine's accounts are untouched"
