"""Model bundles: round trip, tamper detection, card validation, never unpickling."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import brainseg_core
from brainseg_core.bundle import load_bundle, save_bundle, update_card
from brainseg_core.errors import BundleError
from brainseg_core.model_card import ModelCard, bundle_summary, resolve_card_path
from brainseg_core.models import build_model
from brainseg_core.preprocessing import NORMALIZATION

SEG_ARGS = {"base_filters": 4, "depth": 2}
SEG_THRESHOLDS = {"mask_probability": 0.5, "min_area_px": 10}


def _trained_segmenter() -> torch.nn.Module:
    """A tiny ResUNet with non-default BatchNorm statistics (as after training)."""
    torch.manual_seed(0)
    model = build_model("resunet", **SEG_ARGS)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 32, 32) * 2 + 1)
    return model.eval()


def _save_seg(out: Path, model: torch.nn.Module | None = None, **kw: Any) -> Path:
    args = {
        "name": "Tiny seg",
        "kind": "segmenter",
        "arch": "resunet",
        "arch_args": SEG_ARGS,
        "input_size": 64,
        "thresholds": SEG_THRESHOLDS,
    } | kw
    return save_bundle(model if model is not None else _trained_segmenter(), out, **args)


def _edit_card(card_path: Path, **changes: Any) -> None:
    data = json.loads(card_path.read_text())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    card_path.write_text(json.dumps(data))


def test_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    model = _trained_segmenter()
    card_path = _save_seg(tmp_path, model, metrics={"dice": 0.8}, training={"epochs": 3})
    assert card_path == tmp_path / "Tiny-seg.json"
    assert (tmp_path / "Tiny-seg.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Tiny-seg.json", "Tiny-seg.safetensors"]

    bundle = load_bundle(card_path)
    assert bundle.path == card_path
    assert bundle.weights_path == tmp_path / "Tiny-seg.safetensors"
    assert not bundle.model.training
    assert all(p.dtype == torch.float32 for p in bundle.model.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(x), bundle.model(x)
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
    # BatchNorm running statistics travel with the weights.
    torch.testing.assert_close(
        bundle.model.stem[1].running_mean, model.stem[1].running_mean, rtol=1e-3, atol=1e-3
    )
    assert bundle.model.stem[1].num_batches_tracked.item() == 3


def test_card_contents(tmp_path: Path) -> None:
    card_path = _save_seg(tmp_path, training={"epochs": 3}, notes="test", license="CC BY-NC-SA 4.0")
    data = json.loads(card_path.read_text())
    assert data["format"] == "brainseg-model-card/1"
    assert data["kind"] == "segmenter" and data["arch"] == "resunet" and data["arch_args"] == SEG_ARGS
    assert data["channel_order"] == ["pre-contrast", "FLAIR", "post-contrast"]
    assert data["normalization"] == NORMALIZATION
    assert data["software_version"] == brainseg_core.__version__
    assert data["weights_file"] == "Tiny-seg.safetensors"
    assert data["weights_dtype"] == "float16"
    assert data["created"].endswith("+00:00")

    assert (
        data["weights_sha256"] == hashlib.sha256((tmp_path / data["weights_file"]).read_bytes()).hexdigest()
    )
    assert data["training"] == {"epochs": 3} and data["notes"] == "test"
    # Stored in fp16, integer buffers kept.
    tensors = safetensors.torch.load_file(tmp_path / data["weights_file"])
    assert tensors["stem.0.weight"].dtype == torch.float16
    assert tensors["stem.1.num_batches_tracked"].dtype == torch.int64


def test_float32_storage_is_exact(tmp_path: Path) -> None:
    model = _trained_segmenter()
    bundle = load_bundle(_save_seg(tmp_path / "m.json", model, dtype=torch.float32))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(bundle.model.state_dict()[key], value, rtol=0, atol=0)


def test_load_by_weights_path_or_folder(tmp_path: Path) -> None:
    card_path = _save_seg(tmp_path)
    assert load_bundle(card_path.with_suffix(".safetensors")).path == card_path
    assert load_bundle(tmp_path).path == card_path
    _save_seg(tmp_path, name="Second")
    with pytest.raises(BundleError, match="holds 2 bundles"):
        load_bundle(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no model bundle"):
        load_bundle(tmp_path / "empty")


def test_classifier_bundle_and_starting_weights_dropped(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("plain_cnn", width=4).eval()
    card_path = save_bundle(
        model,
        tmp_path,
        name="cls",
        kind="classifier",
        arch="plain_cnn",
        arch_args={"width": 4, "weights": None},
        input_size=64,
        thresholds={"tumour_probability": 0.5},
        metrics={"val": {"auc": 0.9123}},
    )
    bundle = load_bundle(card_path)
    assert bundle.card.arch_args == {"width": 4}
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), model(x), rtol=2e-2, atol=2e-2)
    assert bundle_summary(bundle.card).startswith("cls | plain_cnn classifier | roc_auc - | ")


def test_save_unwraps_compiled_and_parallel_models(tmp_path: Path) -> None:
    model = _trained_segmenter()
    wrapped = torch.nn.DataParallel(model)
    bundle = load_bundle(_save_seg(tmp_path, wrapped, dtype=torch.float32))
    torch.testing.assert_close(bundle.model.stem[0].weight, model.stem[0].weight, rtol=0, atol=0)


def test_tampered_weights_fail_the_sha256_check(tmp_path: Path) -> None:
    card_path = _save_seg(tmp_path)
    weights = card_path.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256") as info:
        load_bundle(card_path)
    assert info.value.path == weights


def test_wrong_arch_in_card(tmp_path: Path) -> None:
    card_path = _save_seg(tmp_path)
    _edit_card(card_path, arch="unet")
    with pytest.raises(BundleError, match=r"'arch' must be a known architecture"):
        load_bundle(card_path)
    _edit_card(card_path, arch="resnet18")
    with pytest.raises(BundleError, match="is a classifier, but the card's kind is 'segmenter'"):
        load_bundle(card_path)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    card_path = _save_seg(tmp_path)
    _edit_card(card_path, arch_args={"base_filters": 8, "depth": 2})
    with pytest.raises(BundleError, match=r"do not match the card's architecture.*wrong shapes: decoder"):
        load_bundle(card_path)
    _edit_card(card_path, arch_args={"base_filters": 4, "depth": 3})
    with pytest.raises(BundleError, match=r"missing tensors: decoder.2"):
        load_bundle(card_path)
    _edit_card(card_path, arch_args={"base_filters": 4, "width": 3})
    with pytest.raises(BundleError, match="invalid arch_args for resunet"):
        load_bundle(card_path)


def test_absurd_arch_args_are_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    card_path = _save_seg(tmp_path)
    # ~10^13 parameters: building this network for real would exhaust any machine's memory
    _edit_card(card_path, arch_args={"base_filters": 200_000, "depth": 2})
    with pytest.raises(BundleError, match=r"do not match the card's architecture.*wrong shapes"):
        load_bundle(card_path)


def test_save_refuses_a_model_that_does_not_match_arch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot save this model as resunet.*wrong shapes"):
        _save_seg(tmp_path, arch_args={"base_filters": 8, "depth": 2})
    with pytest.raises(ValueError, match=r"thresholds\.min_area_px"):
        _save_seg(tmp_path, thresholds={"mask_probability": 0.5})
    with pytest.raises(ValueError, match="input_size 62 is not divisible"):
        _save_seg(tmp_path, input_size=62)
    with pytest.raises(ValueError, match="dtype"):
        _save_seg(tmp_path, dtype=torch.int8)
    with pytest.raises(TypeError, match="cannot write object"):
        _save_seg(tmp_path, training={"bad": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".pkl"])
def test_pickle_files_are_refused_without_unpickling(tmp_path: Path, suffix: str) -> None:
    class Boom:
        def __reduce__(self) -> tuple:
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(BundleError, match="never loads pickle"):
        load_bundle(path)
    assert not (tmp_path / "pwned").exists()


def test_pickle_disguised_as_safetensors_is_refused(tmp_path: Path) -> None:
    card_path = _save_seg(tmp_path)
    weights = card_path.with_suffix(".safetensors")
    weights.write_bytes(pickle.dumps({"stem.0.weight": [1.0]}))

    _edit_card(card_path, weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
    with pytest.raises(BundleError, match="not a valid safetensors file"):
        load_bundle(card_path)


@pytest.mark.parametrize("key", ["name", "kind", "thresholds", "weights_sha256", "input_size"])
def test_missing_card_key(tmp_path: Path, key: str) -> None:
    card_path = _save_seg(tmp_path)
    _edit_card(card_path, **{key: None})
    with pytest.raises(BundleError, match=f"lacks required key.*{key}"):
        load_bundle(card_path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format": "brainseg-model-card/2"}, "unsupported card format"),
        ({"kind": "detector"}, "'kind' must be one of classifier, segmenter"),
        ({"normalization": {"id": "slice-zscore"}}, "normalization 'slice-zscore'"),
        ({"channel_order": ["FLAIR", "pre-contrast", "post-contrast"]}, "expects channels"),
        (
            {"thresholds": {"mask_probability": 1.5, "min_area_px": 3}},
            r"mask_probability must be a probability",
        ),
        ({"weights_file": "../elsewhere.safetensors"}, "bare NAME.safetensors"),
        ({"weights_file": "other.safetensors"}, "weights file named by Tiny-seg.json not found"),
        ({"input_size": "64"}, "'input_size' must be a positive integer"),
    ],
)
def test_invalid_card_values(tmp_path: Path, changes: dict, message: str) -> None:
    card_path = _save_seg(tmp_path)
    _edit_card(card_path, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(card_path)


def test_unreadable_or_missing_files(tmp_path: Path) -> None:
    card_path = _save_seg(tmp_path)
    card_path.with_suffix(".safetensors").unlink()
    with pytest.raises(BundleError, match="weights file named by"):
        load_bundle(card_path)
    card_path.write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(card_path)
    with pytest.raises(BundleError, match="model card not found"):
        load_bundle(tmp_path / "absent.json")
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path / "notes.txt")


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    model = _trained_segmenter()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(BundleError, match="NaN"):
        load_bundle(_save_seg(tmp_path, model))


def test_update_card_keeps_weights_and_hash_valid(tmp_path: Path) -> None:
    card_path = _save_seg(tmp_path, metrics={"dice": 0.5})
    weights_before = card_path.with_suffix(".safetensors").read_bytes()
    new = update_card(card_path, metrics={"dice": 0.87, "iou": 0.8}, notes="evaluated")
    assert new.metrics == {"dice": 0.87, "iou": 0.8}
    assert card_path.with_suffix(".safetensors").read_bytes() == weights_before
    bundle = load_bundle(card_path)  # hash still verifies
    assert bundle.card.metrics["dice"] == 0.87 and bundle.card.notes == "evaluated"
    assert "dice_patient_mean 0.870" in bundle_summary(bundle.card)  # read from the older name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Tiny-seg.json", "Tiny-seg.safetensors"]

    with pytest.raises(ValueError, match="cannot change weights_sha256"):
        update_card(card_path, weights_sha256="0" * 64)
    with pytest.raises(ValueError, match=r"unknown card key.*metricz"):
        update_card(card_path, metricz={})
    with pytest.raises(ValueError, match=r"thresholds\.mask_probability"):
        update_card(card_path, thresholds={"mask_probability": 2.0, "min_area_px": 1})
    assert load_bundle(card_path).card.notes == "evaluated"


def test_card_dict_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    data = json.loads(_save_seg(tmp_path).read_text())
    data["future_key"] = {"x": 1}
    card = ModelCard.from_dict(data)
    assert card.extra == {"future_key": {"x": 1}}
    assert card.to_dict() == data
    assert list(card.to_dict())[:3] == ["format", "name", "kind"]
    with pytest.raises(ValueError, match="must be a JSON object"):
        ModelCard.from_dict([1, 2])  # type: ignore[arg-type]


def test_optional_keys_default_to_empty(tmp_path: Path) -> None:
    card_path = _save_seg(tmp_path)
    _edit_card(card_path, training=None, metrics=None, license=None, notes=None)
    card = load_bundle(card_path).card
    assert card.training == {} and card.metrics == {} and card.license == "" and card.notes == ""
    assert "dice_patient_mean -" in bundle_summary(card)


def test_resolve_card_path(tmp_path: Path) -> None:
    assert resolve_card_path(tmp_path / "a.safetensors") == tmp_path / "a.json"
    assert resolve_card_path(tmp_path / "a.json") == tmp_path / "a.json"


def test_card_accepts_the_largest_component_switch_and_pipeline_reads_it(tmp_path: Path) -> None:
    from brainseg_core.inference import Pipeline

    card_path = _save_seg(tmp_path)
    update_card(card_path, thresholds={"mask_probability": 0.5, "min_area_px": 0, "largest_component": True})
    assert Pipeline(None, load_bundle(card_path), device="cpu").thresholds.largest_component is True
    with pytest.raises(ValueError, match=r"largest_component must be true or false"):
        update_card(card_path, thresholds={"mask_probability": 0.5, "min_area_px": 0, "largest_component": 1})


def test_bundle_files_are_readable_like_any_file_the_user_writes(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        card_path = _save_seg(tmp_path)
    finally:
        os.umask(old)
    for p in (card_path, card_path.with_suffix(".safetensors")):
        assert p.stat().st_mode & 0o777 == 0o644
