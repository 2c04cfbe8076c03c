"""Slice classifiers: one logit per slice, pretrained weights from the hub cache only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import ResNet18_Weights, VGG16_Weights

from brainseg_core.errors import DataError
from brainseg_core.models import plain_cnn, resnet18, resnet34, resnet50, vgg16
from brainseg_core.models.classifier import pretrained_weights_path


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "builder, size, n_params",
    [
        (resnet18, 64, 11_177_025),
        (resnet34, 64, 21_285_185),
        (resnet50, 32, 23_510_081),
        (vgg16, 32, 14_715_201),
        (plain_cnn, 64, 389_153),
    ],
)
def test_one_logit_per_slice(builder, size: int, n_params: int) -> None:
    model = builder().eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, size, size))
    assert y.shape == (2, 1)
    assert torch.isfinite(y).all()
    assert _n_params(model) == n_params


@pytest.mark.parametrize("builder", [resnet18, vgg16, plain_cnn])
def test_other_input_channel_counts(builder) -> None:
    model = builder(in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 1)


def test_plain_cnn_width_and_validation() -> None:
    assert _n_params(plain_cnn(width=8)) < _n_params(plain_cnn(width=32))
    with pytest.raises(ValueError, match="width"):
        plain_cnn(width=0)
    with pytest.raises(ValueError, match="no pretrained weights"):
        plain_cnn(weights="DEFAULT")
    with pytest.raises(ValueError, match="in_channels"):
        resnet18(in_channels=0)


def test_builders_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        resnet18(True)  # type: ignore[misc]


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_pretrained_resnet_loads_the_cached_checkpoint(torch_home: Path) -> None:
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    path = pretrained_weights_path(ResNet18_Weights.IMAGENET1K_V1)
    assert path == torch_home / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(reference, path)

    model = resnet18(weights="DEFAULT")
    state = model.state_dict()
    for key in ("conv1.weight", "bn1.running_mean", "layer4.1.conv2.weight", "layer2.0.downsample.0.weight"):
        torch.testing.assert_close(state[key], reference[key], rtol=0, atol=0)
    assert state["fc.1.weight"].shape == (1, 512)  # head replaced
    # A random init would differ: the values really came from the file.
    assert not torch.equal(resnet18().state_dict()["conv1.weight"], reference["conv1.weight"])

    # One input channel: the RGB filters are averaged (and rescaled by 3/1).
    gray = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1, in_channels=1).state_dict()["conv1.weight"]
    torch.testing.assert_close(gray, reference["conv1.weight"].mean(1, keepdim=True) * 3)


def test_pretrained_vgg16_uses_only_the_features(torch_home: Path) -> None:
    torch.manual_seed(2)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]).state_dict()
    # The real file also holds the 4096-4096 classifier; a small stand-in must be ignored.
    stored = {f"features.{k}": v for k, v in features.items()} | {"classifier.6.bias": torch.zeros(1000)}
    path = pretrained_weights_path(VGG16_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True)
    torch.save(stored, path)
    state = vgg16(weights="IMAGENET1K_V1").state_dict()
    for key, value in stored.items():
        if key.startswith("features."):
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_missing_pretrained_weights_say_where_to_put_them(torch_home: Path) -> None:
    with pytest.raises(DataError, match=r"resnet34-b627a593\.pth") as info:
        resnet34(weights="DEFAULT")
    assert info.value.path == torch_home / "resnet34-b627a593.pth"
    assert "download" in str(info.value).lower()


def test_corrupt_pretrained_weights_are_refused(torch_home: Path) -> None:
    path = pretrained_weights_path(ResNet18_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(DataError, match="cannot load ImageNet weights"):
        resnet18(weights="DEFAULT")


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_resnets_are_torchvisions_network(depth: int) -> None:
    from brainseg_core.models.resnet import DEPTHS, ResNet

    block, layers = DEPTHS[depth]
    reference_builder = getattr(torchvision.models, f"resnet{depth}")
    # the same seed gives the same initial weights: same modules, created and initialised in order
    torch.manual_seed(7)
    ours = ResNet(block, layers)
    torch.manual_seed(7)
    reference = reference_builder(weights=None)
    ours_state, ref_state = ours.state_dict(), reference.state_dict()
    assert list(ours_state) == list(ref_state)
    for key, value in ref_state.items():
        torch.testing.assert_close(ours_state[key], value, rtol=0, atol=0, msg=key)
    # the same weights (here trained-looking BatchNorm statistics) give the same outputs
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x), rtol=1e-5, atol=1e-5)


def test_a_resnet_bundle_loads_without_torchvision_or_dynamo(tmp_path: Path) -> None:
    import subprocess
    import sys

    from brainseg_core.bundle import save_bundle
    from brainseg_core.models import build_model

    card = save_bundle(
        build_model("resnet18"), tmp_path, name="gate", kind="classifier", arch="resnet18",
        arch_args={}, input_size=64, thresholds={"tumour_probability": 0.5},
    )  # fmt: skip
    # torchvision's import pulls torch._dynamo (over a second on the reference CPU), and so does
    # initialising weights on the meta device, where a bundle's shapes are checked before loading
    code = (
        "import sys; from brainseg_core.bundle import load_bundle; "
        f"cls = load_bundle({str(card)!r}); "
        "print(cls.card.arch, 'torchvision' in sys.modules, 'torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["resnet18", "False", "False"]
