"""Help formatting, exit codes and one-line error reports shared by the command-line tools."""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Callable

from brainseg_core.errors import BrainSegError, BundleError, Cancelled, DataError


class ExitCode(enum.IntEnum):
    """The exit codes of every BrainSeg command-line tool (one table, in every tool's --help).

    Attributes:
        OK: everything asked was done.
        FAILED: the work ran but failed or was refused (some patients of a batch, an install
            refused as worse than the active model, an export that could not be written).
        USAGE: bad usage or unusable input: options, input path, output folder, device.
        MODEL: a model problem: none installed, damaged, incompatible.
        INTERRUPTED: Ctrl+C or cancelled; finished work is kept.
    """

    OK = 0
    FAILED = 1
    USAGE = 2
    MODEL = 3
    INTERRUPTED = 130


EXIT_CODES_HELP = """\
exit codes:
  0    done
  1    failed or refused (the message says why; in a batch, the other items were done)
  2    bad usage or unusable input (options, input path, output folder, device)
  3    model problem (no model installed, damaged or incompatible bundle)
  130  interrupted (Ctrl+C); finished work is kept
"""


def exit_code_for(exc: BaseException) -> ExitCode:
    """The :class:`ExitCode` of an error a user can cause."""
    from brainseg_core.registry import InstallRefused

    if isinstance(exc, (Cancelled, KeyboardInterrupt)):
        return ExitCode.INTERRUPTED
    if isinstance(exc, InstallRefused):
        return ExitCode.FAILED
    if isinstance(exc, BundleError):
        return ExitCode.MODEL
    if isinstance(exc, (DataError, ValueError)):
        return ExitCode.USAGE
    return ExitCode.FAILED


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Show an option's default in its help, unless it has none, is an on/off flag, or the help
    already states it; keep the description's and epilog's line breaks (the exit-code table)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or action.nargs == 0 or "default" in text:
            return text
        return super()._get_help_string(action)


def run_reporting_errors(prog: str, work: Callable[[], object], *, interrupted: str = "interrupted") -> int:
    """Run ``work`` and turn the errors a user can cause into one stderr line and an exit code.

    Args:
        prog: program name that starts each line (``brainseg-eval``).
        work: the command's body.
        interrupted: what to say after Ctrl+C (e.g. how to resume).

    Returns:
        The :class:`ExitCode`: 0 on success; 2 for bad settings or input (``ValueError``,
        ``DataError``), 3 for a model problem (``BundleError``), 1 for other BrainSeg errors and a
        refused install, 130 when cancelled or interrupted. Any other exception is a bug and
        propagates.
    """
    try:
        work()
    except Cancelled as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except (BrainSegError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    return ExitCode.OK


#: The sequences whose DICOM series a command line may name (``--flair SERIES`` ...).
SERIES_OPTIONS: tuple[str, ...] = ("flair", "pre", "post")


def add_series_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--flair/--pre/--post SERIES``: which series of each DICOM study feeds a channel."""
    group = parser.add_argument_group(
        "DICOM series",
        "which series of a DICOM study feeds each channel, when the guess from the series "
        "descriptions is wrong: a SeriesNumber, a SeriesInstanceUID or part of the SeriesDescription "
        "(for a dataset of studies, a description they share)",
    )
    for name in SERIES_OPTIONS:
        group.add_argument(f"--{name}", metavar="SERIES", help=f"the {name} series")


def chosen_series(args: argparse.Namespace) -> dict[str, str] | None:
    """The ``--flair/--pre/--post`` values given, by sequence name, or None when none was."""
    chosen = {name: getattr(args, name) for name in SERIES_OPTIONS if getattr(args, name, None)}
    return chosen or None
