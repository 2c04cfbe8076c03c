"""The command-line tools. Their console-script entry points are the light wrappers here.

Importing a tool's module loads torch and friends, which takes seconds; a Ctrl+C in that time
would otherwise print a ``KeyboardInterrupt`` traceback. The wrappers import the tool inside a
handler, so an early Ctrl+C ends with one line and exit code 130 like a later one.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["eval_main", "finetune_main", "models_main", "predict_main", "train_main"]


def _run(tool: str) -> int:
    try:
        module = importlib.import_module(f"brainseg_core.cli.{tool}")
        return int(module.main())
    except KeyboardInterrupt:
        print(f"brainseg-{tool}: interrupted", file=sys.stderr)
        return 130


def train_main() -> int:
    """``brainseg-train``."""
    return _run("train")


def eval_main() -> int:
    """``brainseg-eval``."""
    return _run("eval")


def predict_main() -> int:
    """``brainseg-predict``."""
    return _run("predict")


def models_main() -> int:
    """``brainseg-models``."""
    return _run("models")


def finetune_main() -> int:
    """``brainseg-finetune``."""
    return _run("finetune")
