"""Install BrainSeg into the Linux desktop menu (freedesktop.org desktop entry + hicolor icons).

``brainseg --install-desktop-entry`` writes, for the current user only (no root needed):

- ``$XDG_DATA_HOME/applications/brainseg.desktop`` from ``resources/brainseg.desktop``, its ``Exec``
  line pointing at the ``brainseg`` executable that is running now (frozen build, venv script or the
  one on ``PATH``);
- ``$XDG_DATA_HOME/icons/hicolor/<N>x<N>/apps/brainseg.png`` and ``.../scalable/apps/brainseg.svg``.

``$XDG_DATA_HOME`` defaults to ``~/.local/share``. ``--uninstall-desktop-entry`` removes exactly
those files. No Qt here, so both run headless.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from brainseg_core.atomic import atomic_write
from brainseg_core.resources import resource_path

#: Desktop file id and icon name (``Icon=brainseg``); also Qt's ``desktopFileName``.
APP_ID = "brainseg"
#: PNG sizes shipped in ``resources/icons`` and installed into the hicolor theme.
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)

_EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def data_home() -> Path:
    """The user's XDG data folder (``$XDG_DATA_HOME`` or ``~/.local/share``)."""
    env = os.environ.get("XDG_DATA_HOME")
    return Path(env) if env and Path(env).is_absolute() else Path.home() / ".local" / "share"


def brainseg_command() -> list[str]:
    """The command line that starts this installation of the viewer.

    Returns:
        ``[executable]`` for a frozen build or an installed ``brainseg`` script (the one running now
        when it is one, else the one on ``PATH``); otherwise ``[python, "-m", "brainseg_app.main"]``
        with the running interpreter.
    """
    if getattr(sys, "frozen", False):
        return [str(Path(sys.executable).absolute())]
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == APP_ID and argv0.is_file():
        return [str(argv0.absolute())]
    found = shutil.which(APP_ID)
    if found:
        return [str(Path(found).absolute())]
    # Not resolved: a venv's python is a symlink whose target does not see the venv's packages.
    return [str(Path(sys.executable).absolute()), "-m", "brainseg_app.main"]


def _quote_exec_arg(arg: str) -> str:
    """Quote one ``Exec`` argument as the Desktop Entry Specification requires."""
    if not arg or any(c in _EXEC_RESERVED for c in arg):
        escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
        arg = f'"{escaped}"'
    # The key's value is itself a string: a literal backslash is written twice, a percent sign too.
    return arg.replace("\\", "\\\\").replace("%", "%%")


def desktop_entry_text(command: list[str] | None = None) -> str:
    """The desktop entry with its ``Exec`` line set to ``command`` followed by ``%f``.

    Args:
        command: argv that starts the viewer; default :func:`brainseg_command`.

    Returns:
        The ``.desktop`` file contents.

    Raises:
        FileNotFoundError: ``resources/brainseg.desktop`` is missing from this installation.
    """
    template = resource_path("brainseg.desktop")
    if not template.is_file():
        raise FileNotFoundError(f"{template}: desktop entry template missing; reinstall BrainSeg")
    exec_line = " ".join(_quote_exec_arg(a) for a in (command or brainseg_command())) + " %f"
    lines = [
        f"Exec={exec_line}" if line.startswith("Exec=") else line
        for line in template.read_text(encoding="utf-8").splitlines()
    ]
    return "\n".join(lines) + "\n"


def _targets(root: Path) -> list[tuple[Path, Path | None]]:
    """``(installed path, source icon)`` pairs; the desktop file itself has no source icon."""
    icons = resource_path("icons")
    hicolor = root / "icons" / "hicolor"
    pairs: list[tuple[Path, Path | None]] = [(root / "applications" / f"{APP_ID}.desktop", None)]
    pairs += [
        (hicolor / f"{n}x{n}" / "apps" / f"{APP_ID}.png", icons / f"brainseg-{n}.png") for n in ICON_SIZES
    ]
    pairs.append((hicolor / "scalable" / "apps" / f"{APP_ID}.svg", icons / "brainseg.svg"))
    return pairs


def _check_platform() -> None:
    if sys.platform.startswith(("win", "darwin")):
        raise RuntimeError(
            "desktop entries are a Linux/freedesktop feature; on Windows and macOS use the packaged "
            "application (see packaging/README.md)"
        )


def _refresh_menu_cache(applications: Path) -> None:
    """Run ``update-desktop-database`` when it exists; menus also notice new files without it."""
    tool = shutil.which("update-desktop-database")
    if tool:
        subprocess.run([tool, "-q", str(applications)], check=False, capture_output=True, timeout=60)


def install_desktop_entry(*, root: Path | None = None, command: list[str] | None = None) -> list[Path]:
    """Install the menu entry and icons for the current user (replacing an earlier install).

    Args:
        root: XDG data folder to install into; default :func:`data_home`.
        command: argv that starts the viewer; default :func:`brainseg_command`.

    Returns:
        Every file written.

    Raises:
        RuntimeError: not on a freedesktop platform (Windows, macOS).
        FileNotFoundError: an icon or the entry template is missing from this installation.
    """
    _check_platform()
    root = root or data_home()
    text = desktop_entry_text(command)
    written = []
    for target, source in _targets(root):
        if source is not None and not source.is_file():
            raise FileNotFoundError(f"{source}: icon missing from this installation; reinstall BrainSeg")
        with atomic_write(target) as tmp:
            if source is None:
                tmp.write_text(text, encoding="utf-8")
            else:
                shutil.copyfile(source, tmp)
            tmp.chmod(0o644)
        written.append(target)
    _refresh_menu_cache(root / "applications")
    return written


def uninstall_desktop_entry(*, root: Path | None = None) -> list[Path]:
    """Remove what :func:`install_desktop_entry` installed (nothing else).

    Args:
        root: XDG data folder; default :func:`data_home`.

    Returns:
        The files that existed and were removed (empty when nothing was installed).

    Raises:
        RuntimeError: not on a freedesktop platform (Windows, macOS).
    """
    _check_platform()
    root = root or data_home()
    removed = []
    for target, _ in _targets(root):
        if target.is_file():
            target.unlink()
            removed.append(target)
    if removed:
        _refresh_menu_cache(root / "applications")
    return removed
