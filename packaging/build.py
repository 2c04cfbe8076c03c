"""Build the one-folder desktop application with PyInstaller (``make dist``).

Runs ``packaging/brainseg.spec`` with the current interpreter and writes ``packaging/dist/brainseg/``
(Linux, Windows) or ``packaging/dist/BrainSeg.app`` (macOS); ``packaging/build/`` holds PyInstaller's
work files. Both are git-ignored. See ``packaging/README.md`` for each platform and for a CPU-only
build (much smaller on Linux).

Usage::

    python packaging/build.py            # after: pip install -e '.[dist]'
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESOURCES = REPO / "resources"
#: What the bundle carries below ``resources/`` (read at run time through brainseg_core.resources).
BUNDLED_RESOURCES = ("models", "sample", "icons", "brainseg.desktop")


def bundle_datas(resources: Path = RESOURCES) -> list[tuple[str, str]]:
    """PyInstaller ``datas`` entries: every shipped resource, placed under ``resources/`` in the bundle.

    ``brainseg_core.resources.resource_path`` looks in ``sys._MEIPASS/resources`` when frozen, so
    the layout below ``resources/`` is the same as in the source tree.

    Args:
        resources: the source ``resources`` folder.

    Returns:
        ``(source path, destination folder in the bundle)`` pairs.

    Raises:
        FileNotFoundError: the sample patient, the icons or the desktop entry is missing.
    """
    datas = []
    for name in BUNDLED_RESOURCES:
        src = resources / name
        if not src.exists():
            if name == "models":
                continue  # the build still works; the app then asks for a model folder
            raise FileNotFoundError(f"{src}: missing; the bundle needs it (see packaging/README.md)")
        datas.append((str(src), f"resources/{name}" if src.is_dir() else "resources"))
    return datas


def folder_size(path: Path) -> int:
    """Total size in bytes of the files below ``path`` (links not followed)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _preflight() -> None:
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        sys.exit("PyInstaller is not installed: pip install -e '.[dist]'")
    models = RESOURCES / "models"
    if not any(models.glob("*.safetensors")):
        print(f"warning: {models} holds no model bundle; the built app will have no shipped models")
    import torch

    if sys.platform.startswith("linux") and torch.version.cuda:
        print(
            f"note: torch {torch.__version__} is a CUDA build; its CUDA libraries (several GB) go into the "
            "bundle. For a CPU-only bundle build from a venv with the CPU wheel (packaging/README.md)."
        )


def main() -> int:
    """Build the app; print where it is and how big it is."""
    _preflight()
    work, dist = HERE / "build", HERE / "dist"
    shutil.rmtree(dist / "brainseg", ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--clean",
        "--log-level=WARN",
        f"--workpath={work}",
        f"--distpath={dist}",
        str(HERE / "brainseg.spec"),
    ]
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    subprocess.run(cmd, check=True, cwd=REPO, env=env)
    app = dist / ("BrainSeg.app" if sys.platform == "darwin" else "brainseg")
    exe = app / ("brainseg.exe" if sys.platform == "win32" else "brainseg")
    print(f"built {app} ({folder_size(app) / 2**20:.0f} MiB); check it with: {exe} --self-test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
