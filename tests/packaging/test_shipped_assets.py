"""The sample patient is one complete published patient with its licence; the icons match the SVG."""

from __future__ import annotations

import hashlib
import json
import re
import runpy
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from PySide6.QtWidgets import QApplication

from brainseg_app import desktop, selftest
from brainseg_core.resources import resource_path

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO.parent / "shared" / "data" / "lgg" / "manifest.json"
FIXTURE_PATIENTS = {"TCGA_CS_4942_19970222", "TCGA_CS_4943_20000902"}


def test_sample_is_one_small_complete_patient() -> None:
    root = resource_path("sample")
    patients = [p for p in root.iterdir() if p.is_dir()]
    assert len(patients) == 1
    patient = patients[0]
    assert patient == selftest.sample_patient()
    assert re.fullmatch(r"TCGA_[A-Z0-9]{2}_[A-Z0-9]{4}_\d{8}", patient.name)
    assert patient.name not in FIXTURE_PATIENTS  # the sample is not a test fixture
    images = sorted(p for p in patient.glob("*.tif") if not p.stem.endswith("_mask"))
    numbers = sorted(int(p.stem.rsplit("_", 1)[1]) for p in images)
    assert numbers == list(range(1, len(images) + 1)) and 20 <= len(images) <= 30
    assert all(p.with_name(f"{p.stem}_mask.tif").is_file() for p in images)
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 3_000_000
    areas = [int((tifffile.imread(p.with_name(f"{p.stem}_mask.tif")) > 0).sum()) for p in images]
    assert sum(a > 1000 for a in areas) >= 5  # a clearly visible tumour on several slices


def test_sample_pixels_are_the_published_ones() -> None:
    if not MANIFEST.is_file():
        pytest.fail(f"dataset manifest not found at {MANIFEST}; tests need ../shared/data/lgg")
    manifest = json.loads(MANIFEST.read_text())
    patient = selftest.sample_patient()
    for image_path in sorted(patient.glob("*.tif")):
        if image_path.stem.endswith("_mask"):
            continue
        image = tifffile.imread(image_path)
        mask = tifffile.imread(image_path.with_name(f"{image_path.stem}_mask.tif"))
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        want = manifest[f"{patient.name}/{image_path.stem}"]
        got = [hashlib.sha256(a.tobytes()).hexdigest() for a in (image, mask)]
        assert got == want, image_path


def test_sample_readme_has_the_attribution() -> None:
    text = " ".join(resource_path("sample", "README.md").read_text().split())
    assert selftest.sample_patient().name in text
    for needle in (
        "Buda",
        "Saha",
        "Mazurowski",
        "Computers in Biology and Medicine* 109 (2019) 218-225",
        "TCGA-LGG",
        "CC BY-NC-SA 4.0",
    ):
        assert needle in text


def test_icons_are_rendered_from_the_svg(qapp: QApplication, tmp_path: Path) -> None:
    icons = resource_path("icons")
    ET.parse(icons / "brainseg.svg")  # well-formed
    render_pngs = runpy.run_path(str(REPO / "packaging" / "make_icons.py"))["render_pngs"]
    fresh = render_pngs(icons / "brainseg.svg", tmp_path, (32, 256))
    for path in fresh:
        shipped = icons / path.name
        a = np.asarray(Image.open(path).convert("RGBA"), dtype=np.int16)
        b = np.asarray(Image.open(shipped).convert("RGBA"), dtype=np.int16)
        assert a.shape == b.shape
        assert np.abs(a - b).mean() < 2.0, f"{shipped} is stale: run packaging/make_icons.py"
    for n in desktop.ICON_SIZES:
        with Image.open(icons / f"brainseg-{n}.png") as image:
            assert image.size == (n, n) and image.mode == "RGBA"
    with Image.open(icons / "brainseg.ico") as ico:
        assert {(16, 16), (32, 32), (48, 48), (256, 256)} <= set(ico.info["sizes"])
    with Image.open(icons / "brainseg.icns") as icns:
        assert icns.size[0] >= 256
