"""Every command-line tool has readable --help: no "(default: None)" or "(default: False)" noise."""

from __future__ import annotations

import pytest

from brainseg_core.cli import eval as eval_cli
from brainseg_core.cli import predict as predict_cli
from brainseg_core.cli import train as train_cli


@pytest.mark.parametrize("module", [train_cli, eval_cli, predict_cli], ids=["train", "eval", "predict"])
def test_help_is_clean(module) -> None:
    text = " ".join(module.build_parser().format_help().split())
    assert "usage:" in text
    assert "(default: None)" not in text and "(default: False)" not in text
