"""``evaluate`` with scripted networks whose outputs are known, so every number can be checked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from brainseg_core.bundle import ModelBundle, load_bundle
from brainseg_core.errors import DataError
from brainseg_core.evaluation import evaluate, format_report
from tests.support import make_patient


class FlairBlob(nn.Module):
    """Segments the generated tumour: FLAIR z-score > 2 (the blob is ~+4, brain at most ~+1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 50 * (x[:, 1:2] - 2.0)


class Nothing(nn.Module):
    """Segments nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], -50.0)


class FlairMax(nn.Module):
    """Tumour probability ~1 when any FLAIR z-score exceeds 2, else ~0 (or always 0: ``never``)."""

    def __init__(self, never: bool = False) -> None:
        super().__init__()
        self.never = never

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x[:, 1].flatten(1).amax(dim=1, keepdim=True)
        return torch.full_like(m, -50.0) if self.never else 50 * (m - 2.0)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, tiny_bundle) -> tuple[ModelBundle, ModelBundle]:
    d = tmp_path_factory.mktemp("evalbundles")
    seg = tiny_bundle(d / "seg.json", "segmenter", input_size=64, name="s")
    cls = tiny_bundle(d / "cls.json", "classifier", input_size=64, name="c")
    return load_bundle(cls), load_bundle(seg)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaldata")
    make_patient(root, "TCGA_AA_0001_20000101", n=6, size=64, tumour_slices=(2, 3), seed=1)
    make_patient(root, "TCGA_AA_0002_20000101", n=4, size=64, tumour_slices=(), seed=2)
    return root


def _with(bundle: ModelBundle, model: nn.Module) -> ModelBundle:
    return dataclasses.replace(bundle, model=model)


def test_perfect_models_score_one(bundles, data: Path) -> None:
    cls, seg = bundles
    r = evaluate(data, classifier=_with(cls, FlairMax()), segmenter=_with(seg, FlairBlob()), device="cpu")
    assert r["n_patients"] == 2 and r["n_slices"] == 10
    c = r["classification"]
    assert c["confusion"] == {"tp": 2, "fp": 0, "tn": 8, "fn": 0}
    assert c["accuracy"] == 1.0 and c["roc_auc"] == 1.0 and c["f1_macro"] == 1.0
    s = r["segmentation"]
    # patient 2 has no tumour and an empty prediction: 1 by the empty-empty convention
    assert s["dice_patient"]["mean"] == 1.0 and s["iou_patient"]["min"] == 1.0
    assert s["dice_tumour_slices"] == 1.0 and s["tumour_slices"] == 2
    p = r["pipeline"]
    assert p["dice_patient"]["mean"] == 1.0 and p["missed_tumour_slices"] == 0 and p["segmented_slices"] == 2
    per = {e["patient_id"]: e for e in r["patients"]}
    assert per["TCGA_AA_0001_20000101"]["labels"] == [0, 0, 1, 1, 0, 0]
    assert per["TCGA_AA_0001_20000101"]["tumour_probability"][2] > 0.99
    assert r["throughput"]["segment_all_slices_per_s"] > 0
    text = format_report(r)
    assert "Dice per patient volume" in text and "empty prediction on an empty slice = 1" in text


def test_empty_predictions_and_a_closed_gate(bundles, data: Path) -> None:
    cls, seg = bundles
    r = evaluate(
        data, classifier=_with(cls, FlairMax(never=True)), segmenter=_with(seg, Nothing()), device="cpu"
    )
    s = r["segmentation"]
    # patient 1 (tumour, nothing predicted) 0, patient 2 (no tumour, nothing predicted) 1
    assert s["dice_patient"]["mean"] == 0.5 and s["dice_patient"]["min"] == 0.0
    assert s["dice_tumour_slices"] == 0.0
    assert s["dice_all_slices"] == pytest.approx(8 / 10)  # the 8 empty slices count as 1
    c = r["classification"]
    assert c["recall"] == 0.0 and c["specificity"] == 1.0 and c["balanced_accuracy"] == 0.5
    assert r["pipeline"]["missed_tumour_slices"] == 2 and r["pipeline"]["segmented_slices"] == 0


def test_patient_selection_and_missing_ids(bundles, data: Path) -> None:
    _, seg = bundles
    r = evaluate(data, classifier=None, segmenter=_with(seg, FlairBlob()), patients=["TCGA_AA_0002_20000101"])
    assert [e["patient_id"] for e in r["patients"]] == ["TCGA_AA_0002_20000101"]
    assert r["classification"] is None and r["pipeline"] is None
    with pytest.raises(DataError, match="TCGA_ZZ"):
        evaluate(data, classifier=None, segmenter=seg, patients=["TCGA_ZZ_0000_20000101"])
