"""``brainseg`` argument parsing and dispatch (GUI, self-test, desktop entry, version)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from brainseg_app import main as main_module
from brainseg_app.main import main, parse_args
from brainseg_core import __version__


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_defaults_and_paths(tmp_path: Path) -> None:
    args = parse_args([])
    assert args.path is None and not args.sample and not args.self_test
    assert parse_args(["--sample"]).sample
    assert parse_args([str(tmp_path)]).path == tmp_path
    assert parse_args(["--self-test"]).self_test
    assert parse_args(["--install-desktop-entry"]).install_desktop_entry
    assert parse_args(["--uninstall-desktop-entry"]).uninstall_desktop_entry


def test_mistakes_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no such file or folder" in _error([str(tmp_path / "missing")], capsys)
    assert "either PATH or --sample" in _error([str(tmp_path), "--sample"], capsys)
    assert "not allowed with" in _error(["--self-test", "--install-desktop-entry"], capsys)
    assert "without --self-test" in _error(["--self-test", str(tmp_path)], capsys)
    assert "without --self-test" in _error(["--uninstall-desktop-entry", "--sample"], capsys)
    assert "unrecognized arguments" in _error([str(tmp_path), str(tmp_path)], capsys)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"brainseg {__version__}"


def test_self_test_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    from brainseg_app import selftest

    monkeypatch.setattr(selftest, "run_self_test", lambda: 7)
    assert main(["--self-test"]) == 7


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], (None, False)), (["--sample"], (None, True)), (["PATH"], ("PATH", False))],
)
def test_gui_dispatch_names_the_app_for_the_desktop(
    argv: list[str], expected: tuple[str | None, bool], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtGui import QGuiApplication

    import brainseg_core.engine

    class FakeEngine:  # the model process is started before Qt, handed over, closed at the end
        closed = False

        def close(self) -> None:
            self.closed = True

    engines: list[FakeEngine] = []
    monkeypatch.setattr(
        brainseg_core.engine, "ProcessEngine", lambda: engines.append(FakeEngine()) or engines[-1]
    )
    calls = []
    fake = types.ModuleType("brainseg_app.window")
    fake.run_viewer = lambda path=None, *, sample=False, engine=None: (
        calls.append((path, sample, engine)) or 3
    )  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "brainseg_app.window", fake)
    old_name, old_desktop = QCoreApplication.applicationName(), QGuiApplication.desktopFileName()
    try:
        argv = [str(tmp_path) if a == "PATH" else a for a in argv]
        assert main(argv) == 3
        assert QCoreApplication.applicationName() == main_module.APP_NAME == "BrainSeg"
        assert QGuiApplication.desktopFileName() == main_module.APP_ID == "brainseg"
    finally:
        QCoreApplication.setApplicationName(old_name)
        QGuiApplication.setDesktopFileName(old_desktop)
    path, sample = expected
    assert calls == [(tmp_path if path else None, sample, engines[0])] and engines[0].closed


def test_finetune_worker_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The frozen desktop build runs its fine-tuning process as ``brainseg --finetune-worker ...``."""
    import brainseg_core.cli.finetune as finetune_cli

    seen: list[list[str]] = []
    monkeypatch.setattr(finetune_cli, "main", lambda argv: seen.append(argv) or 7)
    assert main(["--finetune-worker", "SEG", "CORR", "--out", "X"]) == 7
    assert seen == [["SEG", "CORR", "--out", "X"]]
