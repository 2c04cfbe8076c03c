"""``brainseg-eval``: measure the classifier + segmenter pipeline on labelled patients.

Examples::

    brainseg-eval /data/kaggle_3m --patients runs/seg/val_patients.txt --json eval.json
    brainseg-eval /data/kaggle_3m --classifier runs/cls --segmenter runs/seg --device cuda

Models: ``--classifier`` / ``--segmenter`` name bundles (``.json``, ``.safetensors`` or a folder);
without them the newest user-installed bundle of each kind is used, else the shipped one. The
metrics are defined in :mod:`brainseg_core.evaluation`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from brainseg_core.cli._common import HelpFormatter, run_reporting_errors


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``brainseg-eval``."""
    p = argparse.ArgumentParser(
        prog="brainseg-eval",
        description="Evaluate the BrainSeg pipeline (classification, segmentation, end to end) on labelled "
        "data.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("data", help="dataset root, patient folder or stack, with ground-truth masks")
    p.add_argument("--classifier", help="classifier bundle (default: newest installed, else shipped)")
    p.add_argument("--segmenter", help="segmenter bundle (default: newest installed, else shipped)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    p.add_argument("--patients", help="text file of patient ids to evaluate (e.g. val_patients.txt)")
    p.add_argument(
        "--largest-component",
        action="store_true",
        default=None,
        help="keep only each patient's largest 3-D tumour region (Buda et al.'s post-processing; "
        "default: the segmenter card's setting)",
    )
    p.add_argument("--json", dest="json_out", help="also write every number (per patient too) to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``brainseg-eval``.

    Returns:
        0 on success, 1 on a data/model error, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    return run_reporting_errors("brainseg-eval", lambda: _evaluate(args))


def _evaluate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from brainseg_core.atomic import atomic_write
    from brainseg_core.evaluation import evaluate, format_report
    from brainseg_core.registry import resolve_models
    from brainseg_core.training.data import read_patient_list

    ids = read_patient_list(Path(args.patients)) if args.patients else None
    classifier, segmenter = resolve_models(classifier=args.classifier, segmenter=args.segmenter)
    bar = tqdm(desc="evaluating", unit="patient", disable=args.quiet, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    result = evaluate(
        args.data,
        classifier=classifier,
        segmenter=segmenter,
        device=args.device,
        batch_size=args.batch_size,
        patients=ids,
        progress=progress,
        largest_component=args.largest_component,
    )
    bar.close()
    print(format_report(result))
    if args.json_out:
        with atomic_write(Path(args.json_out)) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json_out}")


if __name__ == "__main__":
    sys.exit(main())
