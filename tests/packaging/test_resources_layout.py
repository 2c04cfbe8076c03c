"""Shipped resources are found from the source tree and from a (simulated) frozen one-folder build."""

from __future__ import annotations

import runpy
import shutil
import sys
from pathlib import Path

import pytest

from brainseg_app import desktop, selftest
from brainseg_core.resources import resource_path

REPO = Path(__file__).resolve().parents[2]
BUILD = runpy.run_path(str(REPO / "packaging" / "build.py"))


@pytest.fixture
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRAINSEG_RESOURCES", raising=False)


def test_from_source(no_override: None) -> None:
    assert resource_path("sample") == REPO / "resources" / "sample"
    assert selftest.sample_patient().parent == REPO / "resources" / "sample"
    assert resource_path("brainseg.desktop").is_file()
    assert resource_path("icons", "brainseg.svg").is_file()


def test_frozen_layout(no_override: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lay out a bundle exactly as the spec's datas place the resources.
    for src, dest in BUILD["bundle_datas"](REPO / "resources"):
        src_path, target = Path(src), tmp_path / dest
        if src_path.is_dir():
            shutil.copytree(src_path, target)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(src_path, target / src_path.name)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "brainseg"))

    assert resource_path("sample") == tmp_path / "resources" / "sample"
    patient = selftest.sample_patient()
    assert patient.parent == tmp_path / "resources" / "sample"
    source_sample = REPO / "resources" / "sample" / patient.name
    assert sorted(f.name for f in patient.iterdir()) == sorted(f.name for f in source_sample.iterdir())
    assert (tmp_path / "resources" / "sample" / "README.md").is_file()  # the licence travels with the data
    assert desktop.brainseg_command() == [str(tmp_path / "brainseg")]
    text = desktop.desktop_entry_text()
    assert f"Exec={tmp_path}/brainseg %f" in text.splitlines()
    written = desktop.install_desktop_entry(root=tmp_path / "xdg")
    assert all(p.is_file() for p in written)


def test_bundle_datas_maps_every_resource_below_resources(tmp_path: Path) -> None:
    datas = dict(BUILD["bundle_datas"](REPO / "resources"))
    assert datas[str(REPO / "resources" / "sample")] == "resources/sample"
    assert datas[str(REPO / "resources" / "icons")] == "resources/icons"
    assert datas[str(REPO / "resources" / "brainseg.desktop")] == "resources"
    (tmp_path / "icons").mkdir()
    with pytest.raises(FileNotFoundError, match="sample"):
        BUILD["bundle_datas"](tmp_path)


def test_missing_sample_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINSEG_RESOURCES", str(tmp_path))
    with pytest.raises(selftest.SelfTestError, match="sample patient is missing"):
        selftest.sample_patient()
