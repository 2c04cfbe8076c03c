"""Helpers shared by the viewer tests: scripted networks and an event-loop wait."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch
from PySide6.QtWidgets import QApplication
from torch import nn

DISC_RADIUS = 0.2  # of the slice width


class DiscSegmenter(nn.Module):
    """Logits +20 inside a centred disc of radius ``DISC_RADIUS`` x width, -20 outside."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        disc = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (DISC_RADIUS * w) ** 2
        logits = torch.where(disc, 20.0, -20.0).to(x.dtype)
        return logits.expand(n, 1, h, w).contiguous() + 0 * x[:, :1]


class DiscAndSpotSegmenter(DiscSegmenter):
    """The centred disc plus a small separate square spot near the top-left corner."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x).clone()
        h, w = x.shape[-2:]
        logits[:, :, h // 16 : h // 8, w // 16 : w // 8] = 20.0
        return logits


class MeanClassifier(nn.Module):
    """Tumour logit proportional to the slice's mean normalised intensity (varies across slices)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (4.0 * x.mean(dim=(1, 2, 3))).reshape(-1, 1)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Process Qt events until ``condition()`` holds; fail the test after ``timeout`` seconds."""
    app = QApplication.instance()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {timeout} s")
        app.processEvents()
        time.sleep(0.005)
