"""The core never imports Qt; the app depends on the core, never the reverse."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _imported_modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return set(out.split())


def test_core_imports_no_qt() -> None:
    mods = _imported_modules(
        "import brainseg_core, brainseg_core.io, brainseg_core.models, brainseg_core.bundle, "
        "brainseg_core.registry, brainseg_core.inference.pipeline, brainseg_core.export, "
        "brainseg_core.training.loop, brainseg_core.evaluation, brainseg_core.cli.predict, "
        "brainseg_core.cli.train, brainseg_core.cli.eval"
    )
    qt = sorted(m for m in mods if m.split(".")[0] in {"PySide6", "PyQt5", "PyQt6", "shiboken6", "pyqtgraph"})
    assert qt == [], f"brainseg_core imported Qt modules: {qt}"


def test_core_source_never_imports_the_app_or_qt() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+(brainseg_app|PySide6|pyqtgraph|shiboken6)\b", re.MULTILINE)
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "brainseg_core").rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert offenders == []


def test_the_viewer_state_imports_no_qt() -> None:
    """Like napari's ViewerModel, the viewer's state and its per-patient records are Qt-free."""
    mods = _imported_modules("import brainseg_app.viewer_model, brainseg_app.session")
    qt = sorted(m for m in mods if m.split(".")[0] in {"PySide6", "PyQt5", "PyQt6", "shiboken6", "pyqtgraph"})
    assert qt == [], f"the viewer state imported Qt modules: {qt}"


def test_the_light_tools_parse_their_arguments_without_torch() -> None:
    """``brainseg-predict --help`` and bad arguments answer before torch loads (seconds on a CPU)."""
    mods = _imported_modules(
        "import brainseg_core.cli.predict, brainseg_core.cli.models, brainseg_core.cli.eval"
    )
    assert "torch" not in mods


def test_the_viewer_window_opens_without_torch() -> None:
    """The window shows before torch loads (seconds on a CPU); the models load in the background."""
    assert "torch" not in _imported_modules("import brainseg_app.window, brainseg_app.main")
