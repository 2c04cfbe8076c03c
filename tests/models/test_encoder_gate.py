"""The encoder gate: a ResUNet's frozen encoder with a slice-classification head."""

from __future__ import annotations

import pytest
import torch

from brainseg_core.models import build_model
from brainseg_core.models.encoder_gate import ENCODER_PREFIXES, ResUNetGate
from brainseg_core.models.resunet import ResUNet


def _pair() -> tuple[ResUNet, ResUNetGate]:
    torch.manual_seed(0)
    seg = build_model("resunet", base_filters=4, depth=2)
    gate = build_model("resunet_gate", base_filters=4, depth=2)
    assert isinstance(seg, ResUNet) and isinstance(gate, ResUNetGate)
    shared = {k: v for k, v in seg.state_dict().items() if k.startswith(ENCODER_PREFIXES)}
    missing, unexpected = gate.load_state_dict(shared, strict=False)
    assert not unexpected and all(k.startswith("head.") for k in missing)
    return seg, gate


def test_segmenter_halves_compose_to_the_whole() -> None:
    seg, _ = _pair()
    seg.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(seg.decode(seg.encode(x)), seg(x))
        features = seg.encode(x)
        # decoding a subset of the batch gives that subset's logits
        assert torch.allclose(seg.decode([f[1:] for f in features]), seg(x)[1:], atol=1e-6)


def test_gate_reads_the_segmenters_encoder_and_only_its_head_learns() -> None:
    seg, gate = _pair()
    seg.eval()
    x = torch.randn(4, 3, 32, 32)
    gate.train()
    assert not gate.stem.training and not gate.encoder.training and gate.head.training
    with torch.no_grad():
        for a, b in zip(gate.encode(x), seg.encode(x), strict=True):
            assert torch.equal(a, b)  # BatchNorm in eval mode: the segmenter's features exactly
    trainable = {n for n, p in gate.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    before = {k: v.clone() for k, v in gate.state_dict().items()}
    opt = torch.optim.AdamW([p for p in gate.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(gate(x), torch.ones(4, 1))
    loss.backward()
    opt.step()
    after = gate.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith(ENCODER_PREFIXES))
    assert not torch.equal(before["head.2.weight"], after["head.2.weight"])
    assert gate(x).shape == (4, 1)


def test_gate_scores_grid_cells_and_a_slice_by_its_largest_cell() -> None:
    _, gate = _pair()
    gate.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        cells = gate(x, cells=True)
        assert cells.shape == (3, 1, 8, 8)  # depth 2: cells of 4 x 4 pixels
        assert torch.equal(gate(x), cells.amax(dim=(2, 3)))
    masks = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    masks[0, 0, 5, 9] = 1  # one pixel: its cell (row 1, column 2) and no other
    targets = gate.cell_targets(masks)
    assert targets.shape == (2, 1, 8, 8) and targets.sum() == 1 and targets[0, 0, 1, 2] == 1


def test_gate_refuses_bad_input_and_imagenet_weights() -> None:
    gate = build_model("resunet_gate", base_filters=4, depth=2)
    with pytest.raises(ValueError, match="divisible by 4"):
        gate(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="segmenter bundle"):
        build_model("resunet_gate", weights="DEFAULT")
