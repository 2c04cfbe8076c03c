"""The encoder gate in the pipeline: one encoder pass, the decoder only where the gate passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brainseg_core.bundle import ModelBundle, load_bundle, save_bundle
from brainseg_core.inference.pipeline import Pipeline, shares_encoder
from brainseg_core.models import build_model
from brainseg_core.models.encoder_gate import ENCODER_PREFIXES
from brainseg_core.thresholds import Thresholds
from tests.support import make_volume


def _gate_on(seg: ModelBundle, path: Path, *, threshold: float, perturb: bool = False) -> ModelBundle:
    torch.manual_seed(1)
    gate = build_model("resunet_gate", base_filters=4, depth=2)
    shared = {k: v.float() for k, v in seg.model.state_dict().items() if k.startswith(ENCODER_PREFIXES)}
    if perturb:
        shared["stem.0.weight"] = shared["stem.0.weight"] + 0.01
    gate.load_state_dict(shared, strict=False)
    with torch.no_grad():
        gate.head[2].weight.mul_(10.0)  # a spread of tumour probabilities across slices
    card = save_bundle(
        gate, path, name=path.stem, kind="classifier", arch="resunet_gate",
        arch_args={"base_filters": 4, "depth": 2}, input_size=int(seg.card.input_size),
        thresholds={"tumour_probability": threshold}, dtype=torch.float32,
    )  # fmt: skip
    return load_bundle(card)


@pytest.mark.parametrize("flip_tta", [False, True])
def test_shared_encoder_gives_what_gate_then_segmenter_give(
    seg_bundle: ModelBundle, tmp_path: Path, flip_tta: bool
) -> None:
    volume = make_volume(12, 32, seed=3)
    probe = _gate_on(seg_bundle, tmp_path / "probe.json", threshold=0.5)
    tumour = [s.tumour_probability for s in Pipeline(probe, seg_bundle, device="cpu").run(volume)]
    threshold = float(np.median(tumour))  # about half the slices pass
    gate = _gate_on(seg_bundle, tmp_path / "gate.json", threshold=threshold)
    assert shares_encoder(gate, seg_bundle)
    shared = Pipeline(gate, seg_bundle, device="cpu", precision="fp32", flip_tta=flip_tta)
    separate = Pipeline(gate, seg_bundle, device="cpu", precision="fp32", flip_tta=flip_tta)
    separate._shared_encoder = False  # the plain path: gate network, then the whole segmenter
    a, b = shared.analyse(volume), separate.analyse(volume)
    passed = [s.segmented for s in a.slices]
    assert 0 < sum(passed) < len(passed)
    assert passed == [s.segmented for s in b.slices]
    for x, y in zip(a.slices, b.slices, strict=True):
        assert x.tumour_probability == pytest.approx(y.tumour_probability, abs=1e-5)
        if x.segmented:
            assert x.mask_probability is not None and y.mask_probability is not None
            np.testing.assert_allclose(x.mask_probability, y.mask_probability, atol=1e-5)
            assert np.array_equal(x.mask, y.mask)
        else:
            assert x.mask_probability is None and not x.mask.any()


def test_a_gate_on_another_encoder_is_not_shared(
    seg_bundle: ModelBundle, cls_bundle: ModelBundle, tmp_path: Path
) -> None:
    other = _gate_on(seg_bundle, tmp_path / "other.json", threshold=0.5, perturb=True)
    assert not shares_encoder(other, seg_bundle)
    assert not shares_encoder(cls_bundle, seg_bundle) and not shares_encoder(None, seg_bundle)
    result = Pipeline(other, seg_bundle, device="cpu").analyse(make_volume(4, 32))
    assert len(result.slices) == 4  # still a working gate, with its own encoder pass


@pytest.mark.parametrize("batch_size", [2, 16])
def test_shared_encoder_segments_the_gates_neighbours_too(
    seg_bundle: ModelBundle, tmp_path: Path, batch_size: int
) -> None:
    volume = make_volume(12, 32, seed=3)
    probe = _gate_on(seg_bundle, tmp_path / "probe.json", threshold=0.5)
    tumour = np.array([s.tumour_probability for s in Pipeline(probe, seg_bundle, device="cpu").run(volume)])
    threshold = float(np.quantile(tumour, 0.75))  # a few slices pass on their own
    gate = _gate_on(seg_bundle, tmp_path / "gate.json", threshold=threshold)
    thresholds = Thresholds.from_cards(gate.card, seg_bundle.card).replace(gate_reach=1)
    own = tumour >= threshold
    expected = own | np.r_[own[1:], False] | np.r_[False, own[:-1]]
    assert own.sum() < expected.sum() < len(own)
    results = []
    for shared_encoder in (True, False):
        pipe = Pipeline(
            gate, seg_bundle, thresholds=thresholds, device="cpu", precision="fp32", batch_size=batch_size
        )
        pipe._shared_encoder = shared_encoder
        results.append(pipe.analyse(volume))
    for result in results:
        assert [s.segmented for s in result.slices] == expected.tolist()
    for x, y in zip(*(r.slices for r in results), strict=True):
        if x.segmented:
            assert x.mask_probability is not None and y.mask_probability is not None
            np.testing.assert_allclose(x.mask_probability, y.mask_probability, atol=1e-5)


@pytest.mark.parametrize("reach", [1, 2])
def test_a_fallback_to_the_cpu_midway_keeps_the_slices_waiting_for_their_neighbours(
    seg_bundle: ModelBundle, tmp_path: Path, reach: int
) -> None:
    """The 'GPU' is the meta device: one batch of three slices fits, the next runs out of memory
    even for one slice, and the work moves to the CPU while slices wait for their neighbours."""
    import warnings

    volume = make_volume(6, 32, seed=2)
    gate = _gate_on(seg_bundle, tmp_path / "gate.json", threshold=0.5)
    thresholds = Thresholds.from_cards(gate.card, seg_bundle.card).replace(gate=1e-6, gate_reach=reach)
    kwargs = {"thresholds": thresholds, "device": "cpu", "precision": "fp32", "batch_size": 3}
    reference = Pipeline(gate, seg_bundle, **kwargs).analyse(volume)
    pipe = Pipeline(gate, seg_bundle, **kwargs)
    pipe._plan.device, pipe._plan.batch_size = torch.device("meta"), 3
    seg, head = seg_bundle.model, gate.model
    encode, classify = seg.encode, head.classify
    calls: list[int] = []

    def fake_encode(x: torch.Tensor) -> list[torch.Tensor]:
        if x.device.type != "meta":
            return encode(x)
        calls.append(len(x))
        if len(calls) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [f.to("meta") for f in encode(torch.zeros(x.shape))]

    def fake_classify(f: torch.Tensor) -> torch.Tensor:
        return torch.full((len(f), 1), -20.0) if f.device.type == "meta" else classify(f)

    seg.encode, head.classify = fake_encode, fake_classify  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pipe.analyse(volume)
    assert calls == [3, 3, 2, 1] and pipe.device.type == "cpu"
    # the 'GPU' scored the first three slices ~0; the CPU's slices pass (gate 1e-6) and so do the
    # `reach` slices that waited for them, decoded from maps encoded again on the CPU
    assert [s.segmented for s in result.slices] == [i >= 3 - reach for i in range(6)]
    for s, ref in zip(result.slices[3 - reach :], reference.slices[3 - reach :], strict=True):
        assert s.mask_probability is not None and ref.mask_probability is not None
        np.testing.assert_allclose(s.mask_probability, ref.mask_probability, atol=1e-5)
