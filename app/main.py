"""``brainseg``: the desktop viewer's entry point.

``brainseg [PATH]`` opens the viewer on a patient (TIFF slices, NIfTI files, a DICOM study), a
dataset root, a NIfTI file or a TIFF stack (without PATH, an empty window with the recent
folders); ``--sample`` opens the bundled sample patient.
``--self-test``, ``--install-desktop-entry``, ``--uninstall-desktop-entry`` and ``--version`` run
without a window and without importing Qt, so they are quick and work on a headless machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

from brainseg_core import __version__

#: Application name (Qt's applicationName, hence the X11 WM_CLASS class and StartupWMClass).
APP_NAME = "BrainSeg"
#: Desktop file id (Qt's desktopFileName, hence the Wayland app id).
APP_ID = "brainseg"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``brainseg`` (also used by the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="brainseg",
        description="BrainSeg: brain-MRI viewer with a deep-learning tumour second reader "
        "(research tool, not a certified medical device).",
    )
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        metavar="PATH",
        help="patient folder (TIFF, NIfTI or DICOM study), dataset root, NIfTI file or TIFF stack to open",
    )
    parser.add_argument("--sample", action="store_true", help="open the bundled sample patient")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--self-test",
        action="store_true",
        help="run the models on the sample patient without a window, print the result and exit",
    )
    action.add_argument(
        "--install-desktop-entry",
        action="store_true",
        help="add BrainSeg to this user's application menu (Linux) and exit",
    )
    action.add_argument(
        "--uninstall-desktop-entry",
        action="store_true",
        help="remove what --install-desktop-entry added and exit",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check ``argv`` (exits with status 2 and a usage message on a mistake).

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        The parsed namespace (``path``, ``sample``, ``self_test``, ``install_desktop_entry``,
        ``uninstall_desktop_entry``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    headless = args.self_test or args.install_desktop_entry or args.uninstall_desktop_entry
    if headless and (args.path is not None or args.sample):
        parser.error(
            "PATH and --sample open the viewer; give them without --self-test or the desktop options"
        )
    if args.path is not None and args.sample:
        parser.error("give either PATH or --sample, not both")
    if args.path is not None and not args.path.exists():
        parser.error(f"{args.path}: no such file or folder")
    return args


def _desktop_action(install: bool) -> int:
    from brainseg_app import desktop

    try:
        if install:
            paths = desktop.install_desktop_entry()
            print(
                f"Installed {paths[0]} and {len(paths) - 1} icons; BrainSeg is now in the application menu."
            )
        else:
            paths = desktop.uninstall_desktop_entry()
            print(f"Removed {len(paths)} files." if paths else "No BrainSeg desktop entry was installed.")
    except (OSError, RuntimeError) as err:
        print(f"brainseg: {err}", file=sys.stderr)
        return 1
    return 0


def _run_gui(path: Path | None, sample: bool) -> int:
    # The networks' process first: it imports torch on the other core while this one imports Qt
    # and builds the window (see brainseg_core.engine).
    from brainseg_core.engine import ProcessEngine

    try:
        engine: ProcessEngine | None = ProcessEngine()
    except OSError:  # the viewer tries again when it needs the models, and says what happened
        engine = None
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtGui import QGuiApplication

    # Before the QApplication exists: X11 WM_CLASS and the Wayland app id then match the desktop entry
    # (StartupWMClass=BrainSeg, brainseg.desktop), so the window gets the menu's name and icon.
    QCoreApplication.setApplicationName(APP_NAME)
    QGuiApplication.setDesktopFileName(APP_ID)
    from brainseg_app.window import run_viewer

    try:
        return run_viewer(path, sample=sample, engine=engine)
    finally:
        if engine is not None:
            engine.close()


def main(argv: list[str] | None = None) -> int:
    """Run ``brainseg`` with ``argv``.

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        Process exit status (0 on success).
    """
    multiprocessing.freeze_support()  # the frozen build's model process starts through here
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--finetune-worker"]:  # the viewer's fine-tuning process in the frozen build
        from brainseg_core.cli.finetune import main as finetune_main

        return finetune_main(argv[1:])
    args = parse_args(argv)
    if args.self_test:
        from brainseg_app.selftest import run_self_test

        return run_self_test()
    if args.install_desktop_entry or args.uninstall_desktop_entry:
        return _desktop_action(install=args.install_desktop_entry)
    return _run_gui(args.path, args.sample)


if __name__ == "__main__":
    sys.exit(main())
