"""pyproject lists every package, and a plain wheel install ships the resources."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import brainseg_core

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import brainseg_core, json
from brainseg_core.registry import resolve_models
from brainseg_core.resources import resource_path
cls, seg = resolve_models()
print(json.dumps([brainseg_core.__file__, str(resource_path("sample")), cls.card.name, seg.card.name]))
"""


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {"brainseg_app"} | {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "brainseg_core").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_wheel_install_finds_models_and_sample(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ and *.egg-info into the source tree it builds.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for name in ("app", "brainseg_core", "resources"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip_wheel = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip_wheel, "-q", "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("brainseg-*.whl")
    assert wheel.name.startswith(f"brainseg-{brainseg_core.__version__}-")  # the version's one source
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    env = {"PYTHONPATH": str(target), "BRAINSEG_USER_DATA": str(tmp_path / "user"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    core_file, sample, cls_name, seg_name = json.loads(out)
    assert core_file.startswith(str(target))
    assert sample == str(target / "brainseg_resources" / "sample")
    assert any(p.is_dir() for p in Path(sample).iterdir())
    assert cls_name.startswith("brainseg-classifier") and seg_name.startswith("brainseg-segmenter")
