"""Help formatting, exit codes and one-line error reports shared by the command-line tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from brainseg_core.errors import BrainSegError, Cancelled


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show an option's default in its help, unless it has none, is an on/off flag, or the help
    already states it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or action.nargs == 0 or "default" in text:
            return text
        return super()._get_help_string(action)


def run_reporting_errors(prog: str, work: Callable[[], None], *, interrupted: str = "interrupted") -> int:
    """Run ``work`` and turn the errors a user can cause into one stderr line and an exit code.

    Args:
        prog: program name that starts each line (``brainseg-eval``).
        work: the command's body.
        interrupted: what to say after Ctrl+C (e.g. how to resume).

    Returns:
        0 on success, 1 on a data, model or settings error (``BrainSegError`` or ``ValueError``),
        130 when cancelled or interrupted. Any other exception is a bug and propagates.
    """
    try:
        work()
    except Cancelled as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 130
    except (BrainSegError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    return 0
