"""build_model: every architecture by name, clear errors for unknown names and arguments."""

from __future__ import annotations

import pytest
import torch

from brainseg_core.models import ARCHITECTURES, arch_kind, build_model


def test_registry_names_match_the_contract() -> None:
    assert set(ARCHITECTURES) == {
        "resunet",
        "resnet18",
        "resnet34",
        "resnet50",
        "vgg16",
        "plain_cnn",
        "resunet_gate",
    }
    assert arch_kind("resunet") == "segmenter"
    assert {arch_kind(a) for a in ARCHITECTURES if a != "resunet"} == {"classifier"}


def test_build_by_name_with_arguments() -> None:
    seg = build_model("resunet", base_filters=4, depth=2).eval()
    cls = build_model("plain_cnn", width=4).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert seg(x).shape == (1, 1, 32, 32)
        assert cls(x).shape == (1, 1)


def test_unknown_arch_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'unet'.*plain_cnn, resnet18"):
        build_model("unet")
    with pytest.raises(ValueError, match="unknown architecture"):
        arch_kind("unet")


def test_unknown_argument_lists_valid_arguments() -> None:
    with pytest.raises(ValueError, match=r"resunet does not take argument\(s\) width.*base_filters, depth"):
        build_model("resunet", width=4)


def test_bad_argument_value() -> None:
    with pytest.raises(ValueError, match="base_filters"):
        build_model("resunet", base_filters=-2)
