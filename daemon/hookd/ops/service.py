"""``hookd install-service`` / ``uninstall-service``: the systemd user units of this installation.

The unit templates are ``systemd/hookd.socket`` and ``systemd/hookd.service`` (shipped in the
package as ``hookd/units/``); installing renders ``@HOOKD@`` as the absolute path of this
installation's ``hookd`` and writes both into ``$XDG_CONFIG_HOME/systemd/user/``. Where
``systemctl --user`` works (a user manager is running and its bus is reachable) the socket is
enabled and started; elsewhere the exact commands are printed for the user to run.

With ``http.listen`` set, a third unit, ``hookd-http.socket`` (template ``systemd/hookd-http.socket``),
holds the HTTP port the same way, and hookd.service is rendered to want it and to allow exactly
the address families that port needs (``AF_INET`` or ``AF_INET6``, and ``AF_NETLINK`` for the
peer-uid lookup, daemon/hookd/peer_uid.py). With ``forward.url`` set, it allows
``AF_INET`` and ``AF_INET6`` too, for the forwarder's connection to PostgreSQL.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

from hookd.errors import HookdError

UNITS = ("hookd.socket", "hookd.service")
HTTP_UNIT = "hookd-http.socket"
PLACEHOLDER = "@HOOKD@"
LISTEN_PLACEHOLDER = "@LISTEN@"
#: Lines of hookd.service that an HTTP port changes: (as shipped, as rendered with the port).
_FAMILIES_LINE = "RestrictAddressFamilies=AF_UNIX"
_AFTER_LINE = "After=hookd.socket"

INSTALL_COMMANDS = (
    ("daemon-reload",),
    ("enable", "--now", "hookd.socket"),
    # A reinstall (new version, moved executable) takes effect now if hookd is running.
    ("try-restart", "hookd.service"),
)
UNINSTALL_STOP = (("disable", "--now", "hookd.socket", "hookd.service"),)
UNINSTALL_AFTER = (("daemon-reload",),)


def unit_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where systemd looks for a user's own units: ``$XDG_CONFIG_HOME/systemd/user``."""
    env = os.environ if env is None else env
    config = env.get("XDG_CONFIG_HOME", "")
    if not (config and os.path.isabs(config)):
        config = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(config) / "systemd" / "user"


def hookd_executable() -> Path:
    """The ``hookd`` script of this installation: beside its Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "hookd"  # not resolved: a venv's python is a symlink
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which("hookd")
    if found:
        return Path(found).absolute()
    raise HookdError(
        f"cannot find the hookd executable (not beside {sys.executable}, not on PATH); "
        "install hookd with pip or pipx so that `hookd` is a command, then run this again"
    )


def _exec_path(path: Path) -> str:
    """``path`` as the first word of an ExecStart= line: % escaped, quoted if need be."""
    text = os.fspath(path).replace("%", "%%")
    if any(c.isspace() or c in "\"'\\;" for c in text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render(name: str, executable: Path, http: str | None = None, *, forward: bool = False) -> str:
    """A unit's text for this installation; ``http`` is ``http.listen`` (``127.0.0.1:8787``);
    ``forward``: forwarding to PostgreSQL is on (``forward.url``), whose connection needs TCP."""
    template = resources.files("hookd").joinpath("units", name).read_text(encoding="utf-8")
    text = template.replace(PLACEHOLDER, _exec_path(executable))
    if name == HTTP_UNIT:
        assert http is not None
        return text.replace(LISTEN_PLACEHOLDER, http)
    if name != "hookd.service" or (http is None and not forward):
        return text
    families, why = [], []
    if http is not None:
        families += ["AF_INET6" if http.startswith("[") else "AF_INET", "AF_NETLINK"]
        why.append(f"The HTTP port ({http}) and the kernel's socket table (whose uid owns a connection).")
        text = _replace_line(text, _AFTER_LINE, f"{_AFTER_LINE} {HTTP_UNIT}\nWants={HTTP_UNIT}")
    if forward:
        families += [f for f in ("AF_INET", "AF_INET6") if f not in families]
        why.append("The forwarder's connection to PostgreSQL (forward.url).")
    comment = "".join(f"# {line}\n" for line in why)
    return _replace_line(text, _FAMILIES_LINE, f"{comment}{_FAMILIES_LINE} {' '.join(families)}")


def _replace_line(text: str, line: str, new: str) -> str:
    lines = text.split("\n")
    if lines.count(line) != 1:
        raise HookdError(f"the hookd.service template no longer has the line {line!r} (a bug in hookd)")
    lines[lines.index(line)] = new
    return "\n".join(lines)


def units(http: str | None) -> tuple[str, ...]:
    """The units this installation renders."""
    return (*UNITS, HTTP_UNIT) if http else UNITS


def _install_commands(http: str | None) -> tuple[tuple[str, ...], ...]:
    if not http:
        return INSTALL_COMMANDS
    return tuple((*c, HTTP_UNIT) if c[:2] == ("enable", "--now") else c for c in INSTALL_COMMANDS)


def _warn_environment(out: Callable[[str], None]) -> None:
    for var in ("HOOKD_SOCKET", "HOOKD_HOME"):
        if os.environ.get(var):
            out(
                f"note: {var} is set in this shell; the service listens on the default socket "
                "($XDG_RUNTIME_DIR/hookd/hookd.sock), so unset it for hooks to reach the service"
            )


def systemctl() -> tuple[str | None, str]:
    """``(path, "")`` when ``systemctl --user`` can reach a user manager, else ``(None, why)``."""
    path = shutil.which("systemctl")
    if path is None:
        return None, "systemctl is not installed"
    try:
        r = subprocess.run(
            [path, "--user", "show-environment"], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"`systemctl --user` did not answer: {e}"
    if r.returncode != 0:
        why = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit status {r.returncode}"
        return None, f"`systemctl --user` does not work here: {why}"
    return path, ""


def _show(args: tuple[str, ...]) -> str:
    return shlex.join(["systemctl", "--user", *args])


def _run(path: str, args: tuple[str, ...], out: Callable[[str], None]) -> None:
    out(f"$ {_show(args)}")
    r = subprocess.run([path, "--user", *args], capture_output=True, text=True, timeout=120, check=False)
    for line in (r.stdout + r.stderr).strip().splitlines():
        out(f"  {line}")
    if r.returncode != 0:
        raise HookdError(
            f"`{_show(args)}` failed (exit {r.returncode}); see `journalctl --user -u hookd.socket -u hookd.service` "
            "(is a `hookd run` started by hand still serving the socket? stop it and run this again)"
        )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def install(
    *, dry_run: bool, http: str | None = None, forward: bool = False, out: Callable[[str], None] = print
) -> None:
    """Write the units (with ``hookd-http.socket`` when ``http`` is http.listen) and start them."""
    directory = unit_dir()
    exe = hookd_executable()
    if http is not None and http.endswith(":0"):
        raise HookdError(f"http.listen is {http}: under systemd the port must be fixed (hooks' URLs name it)")
    texts = {name: render(name, exe, http, forward=forward) for name in units(http)}
    commands = _install_commands(http)
    stale = directory / HTTP_UNIT if not http and (directory / HTTP_UNIT).exists() else None
    if dry_run:
        for name, text in texts.items():
            out(f"would write {directory / name}:")
            out("\n".join(f"    {line}".rstrip() for line in text.splitlines()))
        if stale is not None:
            out(f"would stop and remove {stale} (http.listen is not set)")
        out("would run:")
        for args in commands:
            out(f"  {_show(args)}")
        _warn_environment(out)
        return
    path, why = systemctl()
    if stale is not None:
        _remove_http_unit(stale, path, out)
    for name, text in texts.items():
        _write(directory / name, text)
        out(f"wrote {directory / name}")
    out(f"  ExecStart={_exec_path(exe)} run")
    _warn_environment(out)
    if path is None:
        out(f"{why}.")
        out("The units are written; to start hookd, run these in your login session:")
        for args in commands[:2]:
            out(f"  {_show(args)}")
        return
    for args in commands:
        _run(path, args, out)
    listening = "hookd.socket and hookd-http.socket are" if http else "hookd.socket is"
    out(f"{listening} listening; hookd.service starts with the first event and after every login.")
    out("Look at it with: systemctl --user status hookd.socket hookd.service; journalctl --user -u hookd")


def _remove_http_unit(unit: Path, path: str | None, out: Callable[[str], None]) -> None:
    """An HTTP port installed before, no longer configured: stop it, remove its unit."""
    if path is not None:
        _run(path, ("disable", "--now", HTTP_UNIT), out)
    unit.unlink()
    out(f"removed {unit} (http.listen is not set)")


def uninstall(*, dry_run: bool, out: Callable[[str], None] = print) -> None:
    directory = unit_dir()
    present = [directory / name for name in (*UNITS, HTTP_UNIT) if (directory / name).exists()]
    if not present:
        out(f"hookd's units are not in {directory}; nothing to do")
        return
    stop = UNINSTALL_STOP
    if (directory / HTTP_UNIT).exists():
        stop = ((*UNINSTALL_STOP[0][:3], HTTP_UNIT, *UNINSTALL_STOP[0][3:]),)
    if dry_run:
        out("would run:")
        for args in stop:
            out(f"  {_show(args)}")
        for p in present:
            out(f"would remove {p}")
        for args in UNINSTALL_AFTER:
            out(f"  {_show(args)}")
        return
    path, why = systemctl()
    if path is not None:
        for args in stop:
            _run(path, args, out)
    for p in present:
        p.unlink()
        out(f"removed {p}")
    if path is None:
        out(f"{why}.")
        out("If hookd's units are loaded in a user manager, stop them and reload it in your login session:")
        for args in (*stop, *UNINSTALL_AFTER):
            out(f"  {_show(args)}")
        return
    for args in UNINSTALL_AFTER:
        _run(path, args, out)
    out("hookd no longer runs as a service; hooks spool their events until `hookd run` or a reinstall.")
