"""Every command-line tool has readable --help: no "(default: None)" or "(default: False)" noise."""

from __future__ import annotations

import pytest

from brainseg_core.cli import eval as eval_cli
from brainseg_core.cli import finetune as finetune_cli
from brainseg_core.cli import predict as predict_cli
from brainseg_core.cli import train as train_cli


@pytest.mark.parametrize(
    "module", [train_cli, eval_cli, predict_cli, finetune_cli], ids=["train", "eval", "predict", "finetune"]
)
def test_help_is_clean(module) -> None:
    text = " ".join(module.build_parser().format_help().split())
    assert "usage:" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_ctrl_c_while_a_tool_loads_is_one_line_and_130(monkeypatch, capsys) -> None:
    import importlib

    import brainseg_core.cli as cli

    def interrupted(name: str):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert cli.predict_main() == 130
    assert capsys.readouterr().err == "brainseg-predict: interrupted\n"


@pytest.mark.parametrize(
    "module", [train_cli, eval_cli, predict_cli, finetune_cli], ids=["train", "eval", "predict", "finetune"]
)
def test_every_tool_documents_the_same_exit_codes(module) -> None:
    from brainseg_core.cli._common import ExitCode

    text = module.build_parser().format_help()
    for code in ExitCode:
        assert f"\n  {int(code)} " in text


def test_the_tools_parse_their_arguments_before_importing_torch() -> None:
    # --help and usage errors answer at once: torch (about 2 s to import) comes after parsing
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import brainseg_core.cli.train, brainseg_core.cli.predict, brainseg_core.cli.eval, "
        "brainseg_core.cli.finetune\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
