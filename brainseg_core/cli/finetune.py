"""``brainseg-finetune``: fine-tune the segmenter (and the classifier) on the reader's corrections, compare.

Examples::

    brainseg-finetune models/seg.json ~/corrections --out runs/ft
    brainseg-finetune models/seg.json ~/corrections --classifier models/cls.json --out runs/ft
    brainseg-finetune models/seg.json ~/corrections --out runs/ft --original-data /data/kaggle_3m \
        --epochs 5 --held-out 0.25
    python -m brainseg_core.cli.finetune SEG CORRECTIONS --out OUT --json --stdin-control  # the viewer

See :mod:`brainseg_core.finetune` for what it does. With ``--classifier`` the slice gate is
fine-tuned too, on the same patients, and both pairs of models are compared (``--no-classifier``
cancels an earlier ``--classifier``: the segmenter alone). The candidate bundles and
``finetune_result.json`` stay in ``--out``; nothing is installed (``brainseg-models install --force
OUT/run/NAME.json`` and ``OUT/run_classifier/NAME.json``, or the viewer's Adopt, do that). A failure
or cancel removes ``--out``.

With ``--json`` every stdout line is one JSON object (the viewer's protocol)::

    {"event": "stage", "stage": "prepare" | "train" | "train_classifier" | "evaluate"}
    {"event": "progress", "done": 12, "total": 40}
    {"event": "log", "message": "..."}
    {"event": "result", "path": "OUT/finetune_result.json", "result": {...}}   (last line on success)
    {"event": "cancelled", "message": "..."}                                   (last line, exit 130)
    {"event": "error", "message": "...", "exit_code": 2}                      (last line on failure)

``progress`` runs over both trainings (segmenter, then classifier) and the evaluation; its total may
grow a little when the classifier's training starts (its steps are known only then).

Cancel: SIGTERM or SIGINT; with ``--stdin-control`` also a line ``cancel`` on stdin or stdin
closing (so the work stops when the program that started it goes away).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brainseg_core.cli._common import EXIT_CODES_HELP, ExitCode, HelpFormatter, exit_code_for
from brainseg_core.errors import BrainSegError, Cancelled
from brainseg_core.finetune import FinetuneResult, FinetuneSettings


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to below 1, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to below 1, got {text!r}")
    return value


def _count_or_all(text: str) -> int | None:
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of patients or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'all', got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``brainseg-finetune``."""
    d = FinetuneSettings()
    p = argparse.ArgumentParser(
        prog="brainseg-finetune",
        description="Fine-tune a segmenter (and optionally the classifier, the slice gate) on corrected "
        "patients (File > Save corrections as training data) and compare them with the current ones on "
        "corrected patients held out of the fine-tuning.",
        formatter_class=HelpFormatter,
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("segmenter", help="the current segmenter bundle (NAME.json, NAME.safetensors or folder)")
    p.add_argument(
        "corrections", help="folder of corrected patients (<patient>/<patient>_<n>.tif + _mask.tif)"
    )
    p.add_argument("--out", required=True, help="new folder for the candidates, their runs and the result")
    p.add_argument(
        "--classifier",
        metavar="BUNDLE",
        help="the current classifier (slice gate) bundle: fine-tune it too, on the same patients, and "
        "compare both pairs (gate recall, specificity and ROC AUC; Dice with the gate)",
    )
    p.add_argument(
        "--no-classifier",
        dest="classifier",
        action="store_const",
        const=None,
        help="fine-tune the segmenter only (the default; cancels an earlier --classifier)",
    )
    p.add_argument("--original-data", metavar="DIR", help="original training data to mix in (LGG layout)")
    p.add_argument(
        "--max-original",
        type=_count_or_all,
        default=d.max_original_patients,
        metavar="N",
        help="mix in at most N original patients (a seeded draw), or 'all'",
    )
    p.add_argument(
        "--held-out",
        type=_share,
        default=d.held_out_share,
        metavar="SHARE",
        help="share of corrected patients held out for the comparison (0: none; with fewer than 3 "
        "corrected patients nothing is held out and the comparison is labelled 'not held out')",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs over the training slices")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="slices per step")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the held-out draw and the training")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="one JSON object per stdout line (see the module doc)")
    p.add_argument(
        "--stdin-control",
        action="store_true",
        help="cancel on a 'cancel' line on stdin or when stdin closes (for a parent program)",
    )
    return p


class _Output:
    """Writes events as JSON lines (``--json``) or as text for a terminal."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._lock = threading.Lock()

    def event(self, kind: str, text: str | None = None, **data: Any) -> None:
        with self._lock:
            if self.as_json:
                line = json.dumps({"event": kind, **({"message": text} if text is not None else {}), **data})
                print(line, flush=True)
            elif text is not None:
                print(text, file=sys.stderr if kind in ("error", "cancelled") else sys.stdout, flush=True)


def _watch_stdin(cancel: threading.Event) -> None:
    """Set ``cancel`` on a ``cancel`` line or at the end of stdin (the parent went away)."""
    for line in sys.stdin:
        if line.strip().lower() == "cancel":
            break
    cancel.set()


def _num(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f} %" if pct else f"{value:.3f}"


def _summary(result: FinetuneResult) -> str:
    """The text printed without ``--json``: both candidates and their scores beside the current ones."""
    lines = [
        f"segmenter candidate {result.candidate}",
        f"compared on {len(result.compared_on)} {result.comparison.label}:",
        f"  {'patient':28s} {'Dice current':>12s} {'Dice candidate':>15s}",
    ]
    for pid in result.compared_on:
        lines.append(
            f"  {pid:28s} {result.current.dice[pid]:12.3f} {result.candidate_scores.dice[pid]:15.3f}"
        )
    lines.append(f"  {'mean':28s} {result.current.dice_mean:12.3f} {result.candidate_scores.dice_mean:15.3f}")
    cur, cand = result.current_gate, result.candidate_gate
    if result.classifier_candidate is not None and cur is not None and cand is not None:
        lines += [
            f"classifier candidate {result.classifier_candidate} (gate {cand.threshold:.3g}):",
            f"  {'':28s} {'current':>12s} {'candidate':>15s}",
        ]
        for label, a, b, pct in (
            ("slice recall at the gate", cur.slice_recall, cand.slice_recall, True),
            ("specificity at the gate", cur.slice_specificity, cand.slice_specificity, True),
            ("ROC AUC", cur.roc_auc, cand.roc_auc, False),
            ("Dice with the gate (mean)", cur.pipeline_dice_mean, cand.pipeline_dice_mean, False),
        ):
            lines.append(f"  {label:28s} {_num(a, pct):>12s} {_num(b, pct):>15s}")
        lines.append(f"  {'tumour slices missed':28s} {cur.fn:12d} {cand.fn:15d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``brainseg-finetune``.

    Returns:
        The exit code (:class:`~brainseg_core.cli._common.ExitCode`).
    """
    args = build_parser().parse_args(argv)
    out = _Output(args.json)
    cancel = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        cancel.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if args.stdin_control:
            threading.Thread(target=_watch_stdin, args=(cancel,), daemon=True).start()
        return _run(args, out, cancel)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> int:
    """The fine-tuning with its events; returns the exit code."""
    from brainseg_core.finetune import RESULT_FILE, fine_tune

    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))

    settings = FinetuneSettings(
        held_out_share=args.held_out,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        max_original_patients=args.max_original,
    )
    last = [-1]

    def progress(done: int, total: int) -> None:
        if done != last[0]:
            last[0] = done
            out.event("progress", done=done, total=total)

    log: Callable[[str], None] = lambda message: out.event("log", message)  # noqa: E731
    try:
        result = fine_tune(
            args.segmenter,
            args.corrections,
            args.out,
            classifier=args.classifier,
            original_data=args.original_data,
            settings=settings,
            progress=progress,
            cancel=cancel,
            log=log,
            on_stage=lambda stage: out.event("stage", stage=stage.value),
        )
    except Cancelled as exc:
        out.event("cancelled", f"brainseg-finetune: {exc}; nothing was kept")
        return ExitCode.INTERRUPTED
    except (BrainSegError, ValueError) as exc:
        code = exit_code_for(exc)
        out.event("error", f"brainseg-finetune: error: {exc}", exit_code=int(code))
        return code
    if args.json:
        out.event("result", path=str(Path(args.out) / RESULT_FILE), result=result.to_json())
    else:
        print(_summary(result), flush=True)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
