"""Linux desktop entry: the template and the installed file validate; install/uninstall round trip."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from brainseg_app import desktop
from brainseg_app.main import main
from brainseg_core.resources import resource_path


def _validate(path: Path) -> str:
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.fail(
            "desktop-file-validate not found: run `bash packaging/ci-deps.sh` "
            "(apt-get install desktop-file-utils) before the tests"
        )
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _entry(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[Desktop Entry]"
    return dict(line.split("=", 1) for line in lines[1:] if "=" in line)


def test_template_validates_without_hints() -> None:
    template = resource_path("brainseg.desktop")
    assert _validate(template) == ""  # no error, warning or hint
    entry = _entry(template)
    assert entry["Type"] == "Application"
    assert entry["Name"] == "BrainSeg"
    assert entry["Icon"] == desktop.APP_ID
    assert entry["Exec"] == "brainseg %f"
    assert entry["Terminal"] == "false"
    assert "image/tiff" in entry["MimeType"].split(";")
    assert "MedicalSoftware" in entry["Categories"].split(";")
    from brainseg_app.main import APP_NAME

    assert entry["StartupWMClass"] == APP_NAME


def test_install_uninstall_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "xdg data"
    foreign = root / "applications" / "other.desktop"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("[Desktop Entry]\n")
    command = ["/opt/Brain Seg 100%/brainseg"]

    written = desktop.install_desktop_entry(root=root, command=command)

    entry_path = root / "applications" / "brainseg.desktop"
    assert written[0] == entry_path
    assert _validate(entry_path) == ""
    exec_line = _entry(entry_path)["Exec"]
    assert exec_line == '"/opt/Brain Seg 100%%/brainseg" %f'
    for n in desktop.ICON_SIZES:
        png = root / "icons" / "hicolor" / f"{n}x{n}" / "apps" / "brainseg.png"
        assert png in written
        with Image.open(png) as image:
            assert image.size == (n, n)
    svg = root / "icons" / "hicolor" / "scalable" / "apps" / "brainseg.svg"
    assert svg.read_bytes() == resource_path("icons", "brainseg.svg").read_bytes()
    assert oct(entry_path.stat().st_mode & 0o777) == "0o644"

    # Installing again replaces the files in place.
    assert desktop.install_desktop_entry(root=root, command=command) == written

    removed = desktop.uninstall_desktop_entry(root=root)
    assert sorted(removed) == sorted(written)
    assert not any(p.exists() for p in written)
    assert foreign.exists()  # nothing else is touched
    assert desktop.uninstall_desktop_entry(root=root) == []


def test_cli_installs_an_exec_line_that_starts_brainseg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert main(["--install-desktop-entry"]) == 0
    assert "application menu" in capsys.readouterr().out
    entry_path = tmp_path / "applications" / "brainseg.desktop"
    _validate(entry_path)
    argv = shlex.split(_entry(entry_path)["Exec"].replace("%%", "%"))
    assert argv[-1] == "%f"
    assert Path(argv[0]).is_absolute() and Path(argv[0]).exists()
    proc = subprocess.run([*argv[:-1], "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("brainseg ")

    assert main(["--uninstall-desktop-entry"]) == 0
    assert not entry_path.exists()
    assert main(["--uninstall-desktop-entry"]) == 0
    assert "No BrainSeg desktop entry" in capsys.readouterr().out


def test_command_falls_back_to_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.setattr(shutil, "which", lambda name: None)
    command = desktop.brainseg_command()
    assert command[1:] == ["-m", "brainseg_app.main"]
    proc = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr  # the venv's interpreter, not the one its symlink points to
    assert proc.stdout.startswith("brainseg ")


def test_refuses_on_other_platforms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(RuntimeError, match="Linux"):
        desktop.install_desktop_entry(root=tmp_path)
    assert not any(tmp_path.iterdir())
