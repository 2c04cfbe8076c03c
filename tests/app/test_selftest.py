"""``brainseg --self-test`` as a user runs it: a headless subprocess, judged by exit code and output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from brainseg_core.resources import resource_path

QT_MODULES = ("PySide6", "shiboken6", "pyqtgraph")


def _self_test(env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    env.pop("QT_QPA_PLATFORM", None)  # the self-test must not need a display or Qt at all
    env.pop("DISPLAY", None)
    return subprocess.run(
        [sys.executable, "-m", "brainseg_app.main", "--self-test"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _resources_with(tmp_path: Path, tiny_bundle: Callable[..., Path] | None = None) -> Path:
    """A resources folder with the real sample patient and, given the ``tiny_bundle`` fixture, a tiny
    untrained segmenter."""
    root = tmp_path / "resources"
    (root / "models").mkdir(parents=True)
    (root / "sample").mkdir()
    (root / "sample" / _sample_id()).symlink_to(resource_path("sample").resolve() / _sample_id())
    if tiny_bundle is not None:
        tiny_bundle(root / "models", "segmenter", input_size=64, seed=0, name="untrained-seg")
    return root


def _sample_id() -> str:
    return next(p.name for p in resource_path("sample").iterdir() if p.is_dir())


def _sample_slices() -> int:
    return len(list(resource_path("sample", _sample_id()).glob("*_mask.tif")))


def test_self_test_passes_with_the_shipped_models() -> None:
    proc = _self_test()
    assert proc.returncode == 0, f"self-test failed:\n{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    assert "self-test passed" in out
    assert re.search(r"segmenter: +\S+ \(resunet, shipped, [a-z ]+\), sha256 [0-9a-f]{12} ok", out), out
    assert f"sample:     {_sample_id()}, {_sample_slices()} slices 256x256" in out
    assert re.search(r"device: +cpu", out) or re.search(r"device: +cuda", out), out
    dice = float(re.search(r"dice: +([0-9.]+)", out).group(1))
    assert 0.5 <= dice <= 1.0


def test_no_models_is_a_clear_failure(tmp_path: Path) -> None:
    proc = _self_test({"BRAINSEG_RESOURCES": str(_resources_with(tmp_path))})
    assert proc.returncode == 1
    assert "self-test FAILED: no models" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "self-test passed" not in proc.stdout


def test_broken_models_fail_on_the_dice_check(tmp_path: Path, tiny_bundle) -> None:
    # Untrained weights load, verify and run end to end, but cannot outline the sample's tumour.
    proc = _self_test({"BRAINSEG_RESOURCES": str(_resources_with(tmp_path, tiny_bundle))})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(
        r"segmenter: +untrained-seg \(resunet, [a-z-]+, [a-z ]+\), sha256 [0-9a-f]{12} ok", proc.stdout
    )
    assert "classifier: none" in proc.stdout
    assert f"{_sample_id()}, {_sample_slices()} slices 256x256" in proc.stdout
    assert re.search(r"dice: +0\.[0-4]", proc.stdout), proc.stdout
    assert "self-test FAILED: Dice" in proc.stderr


def test_tampered_weights_are_refused(tmp_path: Path, tiny_bundle) -> None:
    resources = _resources_with(tmp_path, tiny_bundle)
    weights = resources / "models" / "untrained-seg.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    proc = _self_test({"BRAINSEG_RESOURCES": str(resources)})
    assert proc.returncode == 1
    assert "self-test FAILED: the models do not load" in proc.stderr
    assert "untrained-seg" in proc.stderr
    assert "self-test passed" not in proc.stdout


@pytest.mark.parametrize("args", [["--version"], ["--self-test"]])
def test_headless_paths_never_import_qt(args: list[str], tmp_path: Path) -> None:
    code = (
        "import sys\nfrom brainseg_app.main import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r}))"
    )
    env = {**os.environ, "BRAINSEG_RESOURCES": str(tmp_path)}  # empty: the self-test stops early
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr
