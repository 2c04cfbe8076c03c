"""Linux desktop entry: the template and the installed file validate; install/uninstall round trip."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

from brainseg_app import desktop
from brainseg_app.main import main
from brainseg_core.resources import resource_path

#: Desktop Entry Specification 1.5: the recognised keys, and which take booleans, string lists or locales.
KNOWN_KEYS = {
    "Type", "Version", "Name", "GenericName", "NoDisplay", "Comment", "Icon", "Hidden", "OnlyShowIn",
    "NotShowIn", "DBusActivatable", "TryExec", "Exec", "Path", "Terminal", "Actions", "MimeType",
    "Categories", "Implements", "Keywords", "StartupNotify", "StartupWMClass", "URL",
    "PrefersNonDefaultGPU", "SingleMainWindow",
}  # fmt: skip
BOOLEAN_KEYS = {"NoDisplay", "Hidden", "DBusActivatable", "Terminal", "StartupNotify", "PrefersNonDefaultGPU",
                "SingleMainWindow"}  # fmt: skip
LIST_KEYS = {"OnlyShowIn", "NotShowIn", "Actions", "MimeType", "Categories", "Implements", "Keywords"}
LOCALE_KEYS = {"Name", "GenericName", "Comment", "Icon", "Keywords"}
#: Menu specification: an application's Categories must include one main category.
MAIN_CATEGORIES = {"AudioVideo", "Audio", "Video", "Development", "Education", "Game", "Graphics", "Network",
                   "Office", "Science", "Settings", "System", "Utility"}  # fmt: skip
#: Characters an Exec argument may contain only inside double quotes.
EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def _exec_args(value: str) -> list[str]:
    """The Exec value split into arguments by the specification's quoting rules (ValueError: broken)."""
    value = re.sub(
        r"\\([sntr\\])", lambda m: {"s": " ", "n": "\n", "t": "\t", "r": "\r"}.get(m[1], "\\"), value
    )
    args, i = [], 0
    while i < len(value):
        if value[i] == " ":
            i += 1
            continue
        arg = ""
        if value[i] == '"':
            i += 1
            while True:
                if i == len(value):
                    raise ValueError("unterminated quoted argument")
                c = value[i]
                if c == "\\" and value[i + 1 : i + 2] in ('"', "`", "$", "\\"):
                    arg, i = arg + value[i + 1], i + 2
                    continue
                if c in "\\`$":
                    raise ValueError(f"unescaped {c!r} inside a quoted argument")
                i += 1
                if c == '"':
                    break
                arg += c
            if value[i : i + 1] not in ("", " "):
                raise ValueError("a quoted argument must end at a space")
        else:
            while i < len(value) and value[i] != " ":
                if value[i] in EXEC_RESERVED:
                    raise ValueError(f"reserved character {value[i]!r} outside double quotes")
                arg, i = arg + value[i], i + 1
        args.append(arg)
    return args


def _spec_problems(text: str) -> list[str]:
    """What breaks the Desktop Entry Specification (structure, keys, values, Exec) in ``text``.

    A subset of desktop-file-validate's checks, in Python, so the entry is checked on machines without it.
    """
    problems: list[str] = []
    groups: dict[str, dict[str, str]] = {}
    group: dict[str, str] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if header := re.fullmatch(r"\[([^\[\]\x00-\x1f\x7f]+)\]", line):
            if header[1] in groups:
                problems.append(f"line {n}: group [{header[1]}] appears twice")
            group = groups.setdefault(header[1], {})
            continue
        if group is None:
            problems.append(f"line {n}: {line!r} before the first group header")
            continue
        pair = re.fullmatch(r"([A-Za-z0-9-]+)(\[[^\]]+\])? *= *(.*)", line)
        if pair is None:
            problems.append(f"line {n}: {line!r} is not KEY=VALUE")
            continue
        key, locale, value = pair[1], pair[2], pair[3]
        if key + (locale or "") in group:
            problems.append(f"line {n}: {key + (locale or '')} appears twice")
        if locale and key not in LOCALE_KEYS:
            problems.append(f"line {n}: {key} cannot be localised")
        group[key + (locale or "")] = value
    if next(iter(groups), None) != "Desktop Entry":
        return [*problems, "the first group is not [Desktop Entry]"]
    entry = groups["Desktop Entry"]
    for key, value in entry.items():
        base = key.split("[")[0]
        if base not in KNOWN_KEYS and not base.startswith("X-"):
            problems.append(f"unknown key {key}")
        if base in BOOLEAN_KEYS and value not in ("true", "false"):
            problems.append(f"{key}={value}: not true or false")
        if base in LIST_KEYS and "" in value.removesuffix(";").split(";"):
            problems.append(f"{key}={value}: an empty item in a ;-separated list")
    for key in ("Type", "Name"):
        if key not in entry:
            problems.append(f"required key {key} missing")
    if entry.get("Type") not in ("Application", "Link", "Directory"):
        problems.append(f"Type={entry.get('Type')}: not Application, Link or Directory")
    if entry.get("Version", "1.5") not in ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5"):
        problems.append(f"Version={entry['Version']}: not a version of the specification")
    icon = entry.get("Icon", "")
    if icon and not icon.startswith("/") and Path(icon).suffix in (".png", ".svg", ".xpm"):
        problems.append(f"Icon={icon}: an icon name has no file extension")
    if entry.get("Type") == "Application":
        if not set(entry.get("Categories", "").split(";")) & MAIN_CATEGORIES:
            problems.append(f"Categories={entry.get('Categories')}: no main category")
        if "Exec" not in entry and entry.get("DBusActivatable") != "true":
            problems.append("required key Exec missing")
        try:
            args = _exec_args(entry.get("Exec", ""))
        except ValueError as e:
            problems.append(f"Exec={entry['Exec']}: {e}")
            args = []
        codes = [c for a in args for c in re.findall(r"%(.)", a.replace("%%", ""))]
        if unknown := [c for c in codes if c not in "fFuUick"]:
            problems.append(f"Exec: unknown field codes {unknown}")
        if sum(c in "fFuU" for c in codes) > 1:
            problems.append("Exec: at most one of %f %F %u %U")
    return problems


def _validate(path: Path) -> str:
    """Check the entry against the specification in Python, always; then with desktop-file-validate when
    it is installed (``bash packaging/ci-deps.sh``), returning its output (errors, warnings and hints)."""
    problems = _spec_problems(path.read_text(encoding="utf-8"))
    assert not problems, f"{path}: " + "; ".join(problems)
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        warnings.warn(
            "desktop-file-validate not installed (bash packaging/ci-deps.sh): the desktop entry was checked "
            "against the specification's rules in Python only",
            stacklevel=2,
        )
        return ""
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _entry(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[Desktop Entry]"
    return dict(line.split("=", 1) for line in lines[1:] if "=" in line)


BROKEN = [  # (replace, with, the Python check's complaint): each breaks the template in one way
    ("[Desktop Entry]\n", "", "before the first group header"),
    ("Type=Application\n", "", "required key Type missing"),
    ("Name=BrainSeg\n", "", "required key Name missing"),
    ("Type=Application", "Type=Program", "Type=Program"),
    ("Version=1.4", "Version=2.0", "not a version"),
    ("Terminal=false", "Terminal=no", "not true or false"),
    ("Categories=Science;MedicalSoftware;", "Categories=Science;;MedicalSoftware;", "an empty item"),
    ("Categories=Science;MedicalSoftware;", "Categories=MedicalSoftware;", "no main category"),
    ("Icon=brainseg", "Icon=brainseg.png", "no file extension"),
    ("Terminal=false", "Terminal=false\nTerminal=true", "Terminal appears twice"),
    ("Terminal=false", "Terminal=false\nFrobnicate=1", "unknown key Frobnicate"),
    ("Terminal=false", "Terminal=false\nExec[de]=brainseg", "cannot be localised"),
    ("Terminal=false", "Terminal=false\nnot a key value line", "is not KEY=VALUE"),
    ("Exec=brainseg %f", "Exec=brainseg %x", "unknown field codes"),
    ("Exec=brainseg %f", "Exec=brainseg %f %U", "at most one of"),
    ("Exec=brainseg %f", "Exec=brainseg a&b %f", "reserved character"),
    ("Exec=brainseg %f", 'Exec="/opt/a$b/brainseg" %f', "unescaped"),
    ("Exec=brainseg %f", 'Exec="/opt/brainseg %f', "unterminated"),
]


@pytest.mark.parametrize(("old", "new", "complaint"), BROKEN)
def test_the_python_check_catches_broken_entries(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    template = resource_path("brainseg.desktop").read_text(encoding="utf-8")
    assert old in template
    assert _spec_problems(template) == []
    broken = tmp_path / "brainseg.desktop"
    broken.write_text(template.replace(old, new, 1), encoding="utf-8")
    problems = _spec_problems(broken.read_text(encoding="utf-8"))
    assert any(complaint in p for p in problems), problems
    tool = shutil.which("desktop-file-validate")
    if tool is not None:  # the reference validator agrees that the entry is not clean
        proc = subprocess.run([tool, str(broken)], capture_output=True, text=True)
        assert proc.returncode != 0 or proc.stdout + proc.stderr, new


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
