"""ResUNet: shapes, seed parameter count, input validation, channels_last and bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from brainseg_core.models import ResUNet, resunet


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_forward_returns_one_logit_per_pixel() -> None:
    model = resunet().eval()
    with torch.no_grad():
        model.head.bias.fill_(-5.0)  # logits well below 0, which no probability can be
        y = model(torch.randn(2, 3, 64, 48))
    assert y.shape == (2, 1, 64, 48)
    assert y.dtype == torch.float32
    # Logits, not probabilities: no sigmoid inside the module.
    assert (y < 0).any()


def test_seed_configuration_parameter_count() -> None:
    # Seed: 16-filter stem, 32/64/128 encoder levels, 256 bottleneck -> about 1.2 M parameters.
    model = resunet(base_filters=16, depth=4)
    assert _n_params(model) == 1_203_937
    widths = [block.shortcut[0].out_channels for block in model.encoder]
    assert widths == [32, 64, 128, 256]
    assert [block.shortcut[0].out_channels for block in model.decoder] == [128, 64, 32, 16]
    # Width scales the count roughly quadratically.
    assert 3.9 < _n_params(resunet(base_filters=32)) / _n_params(model) < 4.1


def test_residual_block_structure() -> None:
    block = resunet().encoder[0]
    kinds = [type(m).__name__ for m in block.body]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]
    assert block.body[0].kernel_size == (1, 1) and block.body[3].kernel_size == (3, 3)
    assert block.shortcut[0].kernel_size == (1, 1)


@pytest.mark.parametrize("depth, size", [(2, 4), (3, 8)])
def test_configurable_depth(depth: int, size: int) -> None:
    model = resunet(base_filters=4, depth=depth, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, size * 3, size)).shape == (1, 1, size * 3, size)


def test_input_size_not_divisible_is_a_clear_error() -> None:
    model = resunet()
    with pytest.raises(ValueError, match=r"divisible by 16, got 70x64.*80x64"):
        model(torch.randn(1, 3, 70, 64))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize("kwargs", [{"base_filters": 0}, {"depth": -1}, {"in_channels": 2.5}])
def test_bad_constructor_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ResUNet(**kwargs)


def test_channels_last_and_bf16_autocast_on_cpu() -> None:
    torch.manual_seed(0)
    model = resunet(base_filters=8).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        y_cl = model_cl(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_bf = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, ref, rtol=1e-4, atol=1e-4)
    assert y_bf.shape == (2, 1, 64, 64) and y_bf.dtype == torch.bfloat16
    err = (y_bf.float() - ref).abs().mean() / ref.abs().mean()
    assert err < 0.05


def test_trains_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = resunet(base_filters=4, depth=2).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    target = (x[:, 1:2] > 0.5).float()
    losses = []
    for _ in range(15):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.85
