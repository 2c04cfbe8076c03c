"""``brainseg-eval`` on the two published fixture patients."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from brainseg_core.cli.eval import main
from brainseg_core.registry import shipped_models_dir


@pytest.fixture(scope="module")
def random_bundles(tmp_path_factory: pytest.TempPathFactory, tiny_bundle) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("evalcli")
    seg = tiny_bundle(d / "seg", "segmenter", input_size=64, seed=0, name="rand-seg")
    cls = tiny_bundle(d / "cls", "classifier", input_size=64, name="rand-cls")
    return cls, seg


def _check_result(result: dict, n_patients: int) -> None:
    assert result["n_patients"] == n_patients and len(result["patients"]) == n_patients
    c = result["classification"]
    assert c["n"] == result["n_slices"] and 0 <= c["accuracy"] <= 1 and 0 <= c["roc_auc"] <= 1
    for section in ("segmentation", "pipeline"):
        s = result[section]
        assert 0 <= s["dice_patient"]["mean"] <= 1 and s["tumour_slices"] > 0
    for e in result["patients"]:
        assert len(e["segment_all"]["slice_dice"]) == e["slices"] == len(e["tumour_probability"])


def test_eval_random_bundles_end_to_end(
    random_bundles, lgg_fixture_root: Path, tmp_path: Path, capsys
) -> None:
    cls, seg = random_bundles
    out = tmp_path / "eval.json"
    rc = main([str(lgg_fixture_root), "--classifier", str(cls), "--segmenter", str(seg), "--device", "cpu",
               "--json", str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    for heading in ("Classification", "Segmentation", "End-to-end pipeline", "Throughput", "rand-seg"):
        assert heading in text
    result = json.loads(out.read_text())
    _check_result(result, 2)
    assert result["models"]["segmenter"]["name"] == "rand-seg"


def test_eval_patients_file_restricts(random_bundles, lgg_fixture_root: Path, tmp_path: Path, capsys) -> None:
    cls, seg = random_bundles
    first = sorted(p.name for p in lgg_fixture_root.iterdir() if p.is_dir())[0]
    ids = tmp_path / "ids.txt"
    ids.write_text(first + "\n")
    out = tmp_path / "one.json"
    rc = main([str(lgg_fixture_root), "--classifier", str(cls), "--segmenter", str(seg),
               "--patients", str(ids), "--json", str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    assert [e["patient_id"] for e in json.loads(out.read_text())["patients"]] == [first]
    ids.write_text("TCGA_NOPE_0000_20000101\n")
    assert main([str(lgg_fixture_root), "--segmenter", str(seg), "--patients", str(ids), "--quiet"]) == 2
    assert "TCGA_NOPE" in capsys.readouterr().err


def _eval_shipped(root: Path, out: Path, *flags: str) -> tuple[int, dict, str]:
    """``brainseg-eval ROOT --device cpu --json OUT --quiet FLAGS``: (exit code, JSON result, stdout)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main([str(root), "--device", "cpu", "--json", str(out), "--quiet", *flags])
    return rc, json.loads(out.read_text()) if out.is_file() else {}, stdout.getvalue()


@pytest.fixture(scope="module")
def shipped_eval(lgg_fixture_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str]:
    """The shipped models evaluated once on the fixture patients, shared by the tests below (the slowest
    step of the suite). Module-scoped, so it isolates the user folders itself, as the root conftest's
    function-scoped ``_isolated_user_dirs`` does for each test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRAINSEG_USER_DATA", str(tmp_path_factory.mktemp("userdata")))
        mp.setenv("BRAINSEG_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
        return _eval_shipped(lgg_fixture_root, tmp_path_factory.mktemp("shipped") / "shipped.json")


def test_eval_shipped_models(shipped_eval: tuple[int, dict, str]) -> None:
    """The models shipped in resources/models, found through the registry (no explicit paths)."""
    shipped = sorted(shipped_models_dir().glob("*.json"))
    assert shipped, f"no shipped bundles in {shipped_models_dir()}"
    rc, result, _ = shipped_eval
    assert rc == 0
    _check_result(result, 2)
    assert Path(result["models"]["segmenter"]["path"]).parent == shipped_models_dir()
    assert Path(result["models"]["classifier"]["path"]).parent == shipped_models_dir()


def test_eval_largest_component_keeps_a_subset(
    shipped_eval: tuple[int, dict, str], lgg_fixture_root: Path, tmp_path: Path
) -> None:
    rc, card_run, _ = shipped_eval  # the card's choice: the shipped segmenter keeps the largest region
    plain_rc, plain_run, plain_out = _eval_shipped(
        lgg_fixture_root, tmp_path / "plain.json", "--no-largest-component"
    )
    largest_rc, largest_run, largest_out = _eval_shipped(
        lgg_fixture_root, tmp_path / "largest.json", "--largest-component"
    )
    assert rc == 0 and plain_rc == 0 and largest_rc == 0
    runs = {False: plain_run, True: largest_run}
    assert runs[True]["thresholds"]["largest_component"] is True
    assert runs[False]["thresholds"]["largest_component"] is False
    assert card_run["thresholds"]["largest_component"] is True
    assert "largest 3-D region only" in plain_out + largest_out
    for plain, largest in zip(runs[False]["patients"], runs[True]["patients"], strict=True):
        assert 0 < largest["segment_all"]["predicted_voxels"] <= plain["segment_all"]["predicted_voxels"]


def test_eval_prints_each_volumes_skipped_slices(random_bundles, tmp_path: Path, capsys) -> None:
    from tests.support import make_patient

    _cls, seg = random_bundles
    patient = make_patient(tmp_path / "data", n=4, size=32)
    bad = patient / f"{patient.name}_2.tif"
    bad.write_bytes(b"not a tiff")
    assert main([str(patient), "--segmenter", str(seg), "--quiet"]) == 0
    assert f"brainseg-eval: warning: skipped {bad}" in capsys.readouterr().err
