"""Model resolution: explicit path > newest user bundle > shipped bundle; installing bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from brainseg_core.bundle import save_bundle
from brainseg_core.errors import BundleError
from brainseg_core.models import build_model
from brainseg_core.registry import (
    KEY_METRICS,
    InstallRefused,
    active_bundle,
    install_bundle,
    list_bundles,
    model_choice,
    pin_bundle,
    remove_bundle,
    resolve_models,
    shipped_models_dir,
    use_default_models,
    user_models_dir,
)


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(shipped models dir, user models dir), both empty, under tmp_path."""
    monkeypatch.setenv("BRAINSEG_RESOURCES", str(tmp_path / "resources"))
    monkeypatch.setenv("BRAINSEG_USER_DATA", str(tmp_path / "userdata"))
    return tmp_path / "resources" / "models", tmp_path / "userdata" / "models"


def _save(
    out: Path, name: str, kind: str = "segmenter", created: str | None = None, metric: float | None = None
) -> Path:
    if kind == "segmenter":
        model, arch, args = (
            build_model("resunet", base_filters=2, depth=2),
            "resunet",
            {"base_filters": 2, "depth": 2},
        )
        thresholds = {"mask_probability": 0.5, "min_area_px": 0}
    else:
        model, arch, args = build_model("plain_cnn", width=2), "plain_cnn", {"width": 2}
        thresholds = {"tumour_probability": 0.5}
    metrics = {} if metric is None else {KEY_METRICS[kind]: metric}
    card_path = save_bundle(
        model,
        out,
        name=name,
        kind=kind,
        arch=arch,
        arch_args=args,
        input_size=32,
        thresholds=thresholds,
        metrics=metrics,
    )
    if created:
        data = json.loads(card_path.read_text())
        data["created"] = created
        card_path.write_text(json.dumps(data))
    return card_path


def test_default_dirs(dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    shipped, user = dirs
    assert shipped_models_dir() == shipped
    assert user_models_dir() == user
    monkeypatch.delenv("BRAINSEG_USER_DATA")
    assert user_models_dir().parts[-2:] == ("BrainSeg", "models")


def test_no_segmenter_anywhere_says_how_to_get_one(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(BundleError, match=r"no segmenter model found.*brainseg-train"):
        resolve_models()
    # A classifier alone is not enough.
    _save(dirs[0], "cls", "classifier")
    with pytest.raises(BundleError, match="no segmenter model found"):
        resolve_models()


def test_shipped_only_and_no_classifier(dirs: tuple[Path, Path]) -> None:
    shipped, _ = dirs
    seg_path = _save(shipped, "shipped-seg")
    cls, seg = resolve_models()
    assert cls is None
    assert seg.path == seg_path and seg.card.name == "shipped-seg"


def test_precedence_explicit_over_user_over_shipped(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    shipped, user = dirs
    _save(shipped, "shipped-seg", created="2030-01-01T00:00:00+00:00")  # newer, but shipped
    _save(shipped, "shipped-cls", "classifier")
    _save(user, "user-seg-old", created="2024-01-01T00:00:00+00:00")
    _save(user / "sub", "user-seg-new", created="2025-06-01T12:00:00+00:00")  # one folder down
    _save(user, "user-seg-mid", created="2025-01-01T00:00:00+00:00")

    cls, seg = resolve_models()
    assert seg.card.name == "user-seg-new"
    assert cls is not None and cls.card.name == "shipped-cls"

    explicit_seg = _save(tmp_path / "elsewhere", "explicit-seg", created="2000-01-01T00:00:00+00:00")
    explicit_cls = _save(tmp_path / "elsewhere2", "explicit-cls", "classifier")
    cls, seg = resolve_models(classifier=explicit_cls.parent, segmenter=explicit_seg, device="cpu")
    assert seg.card.name == "explicit-seg" and cls is not None and cls.card.name == "explicit-cls"

    names = [(i.source, i.card.name) for i in list_bundles("segmenter")]
    assert names == [
        ("user", "user-seg-new"),
        ("user", "user-seg-mid"),
        ("user", "user-seg-old"),
        ("shipped", "shipped-seg"),
    ]
    assert [i.card.name for i in list_bundles("classifier")] == ["shipped-cls"]
    assert len(list_bundles()) == 5
    with pytest.raises(ValueError, match="kind must be one of"):
        list_bundles("detector")


def test_explicit_bundle_of_the_wrong_kind(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    cls_path = _save(tmp_path, "cls", "classifier")
    with pytest.raises(BundleError, match="classifier model, but it was given as the segmenter"):
        resolve_models(segmenter=cls_path)


def test_unreadable_cards_are_skipped_and_reported(dirs: tuple[Path, Path]) -> None:
    shipped, user = dirs
    _save(shipped, "good")
    user.mkdir(parents=True)
    (user / "broken.json").write_text("{")
    orphan = _save(user, "orphan")
    orphan.with_suffix(".safetensors").unlink()
    problems: list[BundleError] = []
    infos = list_bundles(on_error=problems.append)
    assert [i.card.name for i in infos] == ["good"]
    assert sorted(p.path.name for p in problems) == ["broken.json", "orphan.safetensors"]
    # The default reports through logging, and resolution still works.
    _, seg = resolve_models()
    assert seg.card.name == "good"


def test_a_tampered_chosen_bundle_raises(dirs: tuple[Path, Path]) -> None:
    shipped, user = dirs
    _save(shipped, "good")
    weights = _save(user, "mine").with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:-1] + b"!")
    with pytest.raises(BundleError, match="sha256"):
        resolve_models()


def test_install_bundle(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    _, user = dirs
    src = _save(tmp_path / "download", "downloaded", metric=0.8)
    installed = install_bundle(src)
    assert installed == user / src.name
    assert installed.read_bytes() == src.read_bytes()
    assert installed.with_suffix(".safetensors").read_bytes() == src.with_suffix(".safetensors").read_bytes()
    assert sorted(p.name for p in user.iterdir()) == ["downloaded.json", "downloaded.safetensors"]
    _, seg = resolve_models()
    assert seg.path == installed

    with pytest.raises(BundleError, match="already installed"):
        install_bundle(src)
    assert install_bundle(installed) == installed  # installing itself is a no-op
    assert install_bundle(src.with_suffix(".safetensors"), overwrite=True) == installed

    # A bundle that fails verification is not installed.
    bad = _save(tmp_path / "bad", "bad", metric=0.9)
    bad.with_suffix(".safetensors").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="sha256"):
        install_bundle(bad)
    assert not (user / "bad.json").exists()


def test_cpu_device_argument(dirs: tuple[Path, Path]) -> None:
    _save(dirs[0], "good")
    _, seg = resolve_models(device=torch.device("cpu"))
    assert next(seg.model.parameters()).device.type == "cpu"


def test_install_refuses_a_worse_or_unmeasured_model_unless_forced(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    shipped, user = dirs
    _save(shipped, "shipped-seg", metric=0.80)
    zero = _save(tmp_path / "a", "dice-zero", metric=0.0)
    with pytest.raises(
        InstallRefused, match=r"0\.000 is below the active segmenter 'shipped-seg' \(0\.800\)"
    ):
        install_bundle(zero)
    unmeasured = _save(tmp_path / "b", "unmeasured")
    with pytest.raises(InstallRefused, match=r"no validation dice_patient_mean.*--force"):
        install_bundle(unmeasured)
    assert not user.exists() or not any(user.iterdir())
    assert resolve_models()[1].card.name == "shipped-seg"
    install_bundle(zero, force=True)
    assert resolve_models()[1].card.name == "dice-zero"
    better = _save(tmp_path / "c", "better", metric=0.85, created="2020-01-01T00:00:00+00:00")
    install_bundle(better)  # better than the active (forced) one: no force needed
    assert resolve_models()[1].card.name == "better"  # installing makes it active, though older


def test_pin_use_default_and_remove(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    shipped, user = dirs
    _save(shipped, "shipped-seg", metric=0.8)
    _save(user, "mine-old", metric=0.7, created="2024-01-01T00:00:00+00:00")
    _save(user, "mine-new", metric=0.9, created="2025-01-01T00:00:00+00:00")
    assert active_bundle("segmenter").card.name == "mine-new"  # newest user bundle
    use_default_models()
    assert model_choice() == {"segmenter": "default", "classifier": "default"}
    assert resolve_models()[1].card.name == "shipped-seg"
    pin_bundle("mine-old")
    assert resolve_models()[1].card.name == "mine-old"
    problems: list[BundleError] = []
    assert len(list_bundles("segmenter", on_error=problems.append)) == 3
    assert problems == []  # the choice file is not mistaken for a broken card
    removed = remove_bundle("mine-old")
    assert not removed.exists() and not removed.with_suffix(".safetensors").exists()
    assert "segmenter" not in model_choice()  # the pin went with it
    assert resolve_models()[1].card.name == "mine-new"
    with pytest.raises(BundleError, match="shipped with BrainSeg and cannot be removed"):
        remove_bundle("shipped-seg")
    with pytest.raises(BundleError, match=r"no model named 'nope'.*mine-new, shipped-seg"):
        pin_bundle("nope")


def test_a_pinned_bundle_that_disappears_says_what_to_do(dirs: tuple[Path, Path]) -> None:
    shipped, user = dirs
    _save(shipped, "shipped-seg")
    mine = _save(user, "mine")
    pin_bundle("mine")
    mine.unlink()
    with pytest.raises(BundleError, match=r"pinned segmenter 'mine' is gone.*use-default"):
        resolve_models()


def test_models_cli(dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from brainseg_core.bundle import update_card
    from brainseg_core.cli.models import main
    from brainseg_core.model_card import read_card

    shipped, _ = dirs
    _save(shipped, "shipped-seg", metric=0.8)
    worse = _save(tmp_path / "w", "worse", metric=0.5)
    assert main(["install", str(worse)]) == 1
    assert "below the active segmenter" in capsys.readouterr().err
    assert main(["install", str(worse), "--force"]) == 0
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "* worse" in out and "dice_patient_mean 0.500" in out and "  shipped-seg" in out
    assert main(["use-default"]) == 0
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "* shipped-seg" in out and "thorough mode" not in out
    member = _save(shipped, "shipped-seg-seed1")
    entry = {"name": "shipped-seg-seed1", "weights_sha256": read_card(member).weights_sha256}
    update_card(
        shipped / "shipped-seg.json", thorough={"ensemble": [entry], "metrics": {"dice_patient_mean": 0.9}}
    )
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "thorough mode: averaged with shipped-seg-seed1 (dice_patient_mean 0.900)" in out
    assert "  shipped-seg-seed1 " not in out  # part of shipped-seg, not a model of its own
    assert main(["show", "worse"]) == 0 and '"name": "worse"' in capsys.readouterr().out
    assert main(["remove", "worse"]) == 0
    assert main(["remove", "worse"]) == 3  # no such model: a model problem (exit-code table)
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_a_segmenters_ensemble_member_is_part_of_it_not_a_model_of_its_own(dirs: tuple[Path, Path]) -> None:
    from brainseg_core.bundle import update_card
    from brainseg_core.model_card import read_card

    shipped, _ = dirs
    main = _save(shipped, "shipped-seg", created="2025-01-01T00:00:00+00:00")
    member = _save(shipped, "shipped-seg-seed1", created="2026-01-01T00:00:00+00:00")  # newer
    assert resolve_models()[1].card.name == "shipped-seg-seed1"  # alone it would be the default
    entry = {"name": "shipped-seg-seed1", "weights_sha256": read_card(member).weights_sha256}
    update_card(main, thorough={"ensemble": [entry]})
    assert [i.card.name for i in list_bundles("segmenter")] == ["shipped-seg"]
    assert resolve_models()[1].card.name == "shipped-seg"
    update_card(main, thorough={"ensemble": [{**entry, "weights_sha256": "0" * 64}]})  # other weights
    assert len(list_bundles("segmenter")) == 2


def test_installing_a_segmenter_brings_its_ensemble_and_removing_it_takes_it(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    from brainseg_core.bundle import update_card
    from brainseg_core.model_card import read_card
    from brainseg_core.registry import install_bundle, remove_bundle

    _, user = dirs
    main = _save(tmp_path / "new", "my-seg")
    member = _save(tmp_path / "new", "my-seg-seed1")
    card = read_card(member)
    update_card(
        main, thorough={"ensemble": [{"name": "my-seg-seed1", "weights_sha256": card.weights_sha256}]}
    )
    installed = install_bundle(main, force=True)
    assert (user / "my-seg-seed1.json").is_file() and (user / card.weights_file).is_file()
    assert [i.card.name for i in list_bundles("segmenter")] == ["my-seg"]  # the member is part of it
    remove_bundle("my-seg")
    assert not installed.exists() and not (user / "my-seg-seed1.json").exists()
    assert not (user / card.weights_file).exists() and list_bundles("segmenter") == []


def test_a_member_two_segmenters_share_stays_and_a_look_alike_is_never_touched(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    from brainseg_core.bundle import update_card
    from brainseg_core.model_card import read_card
    from brainseg_core.registry import install_bundle, remove_bundle

    _, user = dirs
    member = _save(tmp_path / "new", "shared-member")
    entry = {"name": "shared-member", "weights_sha256": read_card(member).weights_sha256}
    for name in ("seg-a", "seg-b"):
        card = _save(tmp_path / "new", name)
        update_card(card, thorough={"ensemble": [entry]})
        install_bundle(card, force=True)  # the second finds the member installed, the same: kept
    remove_bundle("seg-a")
    assert (user / "shared-member.json").is_file()  # seg-b still needs it
    remove_bundle("seg-b")
    assert not (user / "shared-member.json").exists()

    # the user's own model that happens to bear a member's name, with other weights
    own = _save(user, "shared-member")
    own_sha = read_card(own).weights_sha256
    seg_c = _save(tmp_path / "c", "seg-c")
    update_card(seg_c, thorough={"ensemble": [entry]})
    (tmp_path / "c" / "shared-member.json").write_bytes(member.read_bytes())
    (tmp_path / "c" / read_card(member).weights_file).write_bytes(
        (member.parent / read_card(member).weights_file).read_bytes()
    )
    with pytest.raises(BundleError, match="is not seg-c's ensemble member"):
        install_bundle(seg_c, force=True, overwrite=True)
    assert read_card(own).weights_sha256 == own_sha  # not replaced
    update_card(_save(user, "seg-d"), thorough={"ensemble": [entry]})  # names the other weights
    remove_bundle("seg-d")
    assert own.is_file() and read_card(own).weights_sha256 == own_sha  # not deleted either
