"""``brainseg-eval``: measure the classifier + segmenter pipeline on labelled patients.

Examples::

    brainseg-eval /data/kaggle_3m --patients runs/seg/val_patients.txt --json eval.json
    brainseg-eval /data/kaggle_3m --classifier runs/cls --segmenter runs/seg --device cuda
    brainseg-eval --cv runs/cv --json cv.json        # K-fold runs: nested cross-validated table
    brainseg-eval --cv runs/cv --gate-cv runs/gate   # ... and a gate's folds in front of them
    brainseg-eval --cv folds/segmenter /data/kaggle_3m   # folds kept as bundles only (files rebuilt)
    brainseg-eval --cv folds/segmenter --with folds/segmenter-seed1   # the two seeds' ensemble

``--cv`` reads the out-of-fold predictions of a K-fold run (one sub-folder per fold, each trained
with ``brainseg-train segmenter DATA --folds K --fold I --keep last``) and prints per fold and
pooled metrics with each fold's post-processing chosen on the other folds
(:mod:`brainseg_core.crossval`), plus the post-processing chosen on all folds for a model card.
``--gate-cv`` adds a classifier's K-fold run on the same folds in front of the segmenter: its
threshold chosen on the other folds, the end-to-end metrics and the share of slices it sends to
the decoder (:mod:`brainseg_core.gate_crossval`). Given the DATA the folds were trained on, a fold
folder that holds its bundle but no ``out_of_fold.npz`` (or one made by other weights, or of
other patients) gets the file rebuilt from the bundle first (:mod:`brainseg_core.out_of_fold`), so
a project can keep the fold bundles alone. ``--with``
averages other K-fold folders on the same held-out patients into ``--cv``'s: the nested
cross-validation of their ensemble; with ``--write-card BUNDLE --member OTHER`` its choice and
metrics become BUNDLE's thorough mode (:mod:`brainseg_core.thorough`).

Models: ``--classifier`` / ``--segmenter`` name bundles (``.json``, ``.safetensors`` or a folder);
without them the newest user-installed bundle of each kind is used, else the shipped one. The
metrics are defined in :mod:`brainseg_core.evaluation`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainseg_core.cli._common import (
    EXIT_CODES_HELP,
    HelpFormatter,
    add_series_options,
    chosen_series,
    run_reporting_errors,
)
from brainseg_core.thresholds import MAX_GATE_REACH, RegionRule

if TYPE_CHECKING:
    from brainseg_core.crossval import PostProcessing


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``brainseg-eval``."""
    p = argparse.ArgumentParser(
        prog="brainseg-eval",
        description="Evaluate the BrainSeg pipeline (classification, segmentation, end to end) on labelled "
        "data, or report a K-fold training run cross-validated (--cv).",
        formatter_class=HelpFormatter,
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument(
        "data",
        nargs="?",
        help="dataset root, patient folder or stack, with ground-truth masks (with --cv: the dataset the "
        "folds were trained on, to rebuild the out-of-fold files of folds kept as bundles only)",
    )
    p.add_argument(
        "--cv",
        metavar="DIR",
        help="the cross-validated report of a K-fold training folder, from its stored out-of-fold "
        "predictions (with DATA: those of folds kept as bundles only are rebuilt first)",
    )
    p.add_argument(
        "--with",
        dest="ensemble_cv",
        action="append",
        default=[],
        metavar="DIR",
        help="with --cv: another K-fold folder trained on the same held-out patients (e.g. another seed), "
        "averaged with --cv's: the cross-validation of the ensemble of their models (repeatable)",
    )
    p.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="BUNDLE",
        help="with --with and --write-card: the full-data segmenter (one per --with, beside the card's "
        "bundle) averaged with the card's in thorough mode; the ensemble's chosen post-processing and "
        "metrics go into the card's thorough section instead of its own thresholds",
    )
    p.add_argument(
        "--gate-cv",
        metavar="DIR",
        help="with --cv: a classifier's K-fold folder on the same folds, scored as the gate in front of "
        "the segmenter (threshold chosen on the other folds)",
    )
    p.add_argument(
        "--gate-recall",
        type=float,
        default=None,
        metavar="R",
        help="with --gate-cv: the share of tumour slices each fold's gate threshold keeps on the other folds "
        "(default 0.99)",
    )
    p.add_argument(
        "--gate-reach",
        type=int,
        default=None,
        choices=range(MAX_GATE_REACH + 1),
        metavar="N",
        help="with --gate-cv: a fixed gate reach (a slice also passes when a slice within N slices of it "
        "does; 0: its own probability only) instead of the one chosen on the other folds among 0, 1 and 2",
    )
    p.add_argument(
        "--write-gate-card",
        metavar="BUNDLE",
        help="with --gate-cv: write the gate threshold chosen on all folds and the cross-validated "
        "metrics into this classifier bundle's card (the weights are not touched)",
    )
    p.add_argument("--classifier", help="classifier bundle (default: newest installed, else shipped)")
    p.add_argument("--segmenter", help="segmenter bundle (default: newest installed, else shipped)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    p.add_argument("--patients", help="text file of patient ids to evaluate (e.g. val_patients.txt)")
    p.add_argument(
        "--largest-component",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep only each patient's largest 3-D tumour region (Buda et al.'s post-processing; "
        "default: the segmenter card's setting)",
    )
    p.add_argument(
        "--faint-edges",
        type=float,
        default=None,
        metavar="P",
        help="outline faint tumour edges at mask probability >= P on slices left without outline (0: off; "
        "default: the segmenter card's setting)",
    )
    p.add_argument(
        "--write-card",
        metavar="BUNDLE",
        help="with --cv: write the chosen post-processing and the cross-validated metrics into this "
        "segmenter bundle's card (the weights are not touched)",
    )
    p.add_argument(
        "--thorough",
        action="store_true",
        help="the segmenter's thorough mode: the second segmenter its card names, averaged with it, at "
        "the ensemble's cross-validated thresholds (about twice the segmenter's cost); a segmenter "
        "that names none reads each slice mirrored too (flip test-time augmentation)",
    )
    p.add_argument("--json", dest="json_out", help="also write every number (per patient too) to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_series_options(p)
    return p


def gated_post_processing(result: dict[str, Any]) -> PostProcessing | dict[str, PostProcessing]:
    """The segmenter's post-processing behind each fold's gate (``--gate-cv``), from
    :func:`~brainseg_core.crossval.cross_validate`'s result: each fold's own choice, made on the other
    folds, when the nested selection ships; else the default on every fold (what ships then)."""
    from brainseg_core.crossval import PostProcessing

    if result["ship_metrics"] == "pooled":
        return {f["fold"]: PostProcessing(**f["choice"]) for f in result["per_fold"]}
    return PostProcessing(**result["ship"])


def main(argv: list[str] | None = None) -> int:
    """Run ``brainseg-eval``.

    Returns:
        The exit code (:class:`~brainseg_core.cli._common.ExitCode`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cv is None and args.data is None:
        parser.error("give a DATA folder to evaluate, or --cv DIR for a cross-validation report")
    if args.cv is not None:
        given = [
            name
            for name, value in (
                ("--patients", args.patients),
                ("--classifier", args.classifier),
                ("--segmenter", args.segmenter),
                ("--thorough", args.thorough or None),
                ("--largest-component", args.largest_component),
                ("--faint-edges", args.faint_edges),
            )
            if value is not None
        ]
        if given:
            parser.error(
                f"--cv scores the folds' own models and chooses the post-processing: drop {', '.join(given)}"
            )
    if args.write_card is not None and args.cv is None:
        parser.error("--write-card needs --cv DIR")
    if args.ensemble_cv and args.cv is None:
        parser.error("--with needs --cv DIR")
    if args.ensemble_cv and args.write_gate_card is not None:
        parser.error(
            "--write-gate-card with --with would choose the default gate on the ensemble's folds: "
            "write the gate card from --cv alone"
        )
    if args.member and args.write_card is None:
        parser.error("--member names the ensemble written with --write-card BUNDLE: give --write-card")
    if args.member and len(args.member) != len(args.ensemble_cv):
        parser.error("give one --member bundle per --with folder: the full-data model of that recipe")
    if args.ensemble_cv and args.write_card is not None and not args.member:
        parser.error(
            "--write-card with --with writes the card's thorough ensemble: name its other models "
            "with --member"
        )
    if args.gate_cv is not None and args.cv is None:
        parser.error("--gate-cv needs --cv DIR (the segmenter's folds)")
    if args.gate_recall is not None and (args.gate_cv is None or not 0.0 < args.gate_recall <= 1.0):
        parser.error("--gate-recall needs --gate-cv DIR and a value in (0, 1]")
    if args.faint_edges is not None and not 0.0 <= args.faint_edges <= 1.0:
        parser.error("--faint-edges needs a probability between 0 and 1")
    if args.gate_reach is not None and args.gate_cv is None:
        parser.error("--gate-reach needs --gate-cv DIR")
    if args.write_gate_card is not None and args.gate_cv is None:
        parser.error("--write-gate-card needs --gate-cv DIR")
    return run_reporting_errors(
        "brainseg-eval", lambda: _cross_validate(args) if args.cv else _evaluate(args)
    )


def _write_json(path: str, result: dict) -> None:
    from brainseg_core.atomic import atomic_write
    from brainseg_core.jsonsafe import json_safe

    with atomic_write(Path(path)) as tmp:
        tmp.write_text(json.dumps(json_safe(result), indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


def _check_complete(files: list[Path], root: str, *, writes: bool) -> None:
    """Say when a K-fold folder holds fewer folds than its runs were split into (their cards'
    ``training.folds.k``): the report then covers only those folds' patients, and each fold's
    choice is made on fewer others. A card is written only from every fold.

    Raises:
        DataError: when ``writes`` and folds are missing.
    """
    from brainseg_core.errors import BundleError, DataError
    from brainseg_core.model_card import read_card, resolve_card_path

    ks = set()
    for f in files:
        try:  # a fold folder without one readable card says nothing about K
            card = read_card(resolve_card_path(Path(f).parent))
        except BundleError:
            continue
        k = (card.training.get("folds") or {}).get("k")
        if k:
            ks.add(int(k))
    if not ks or len(files) >= max(ks):
        return
    msg = f"{len(files)} of the {max(ks)} folds its runs were split into"
    if writes:
        raise DataError(
            Path(root), f"holds {msg}: a card takes choices made on every fold; train the others first"
        )
    print(f"brainseg-eval: {root} holds {msg}; the report covers their patients only", file=sys.stderr)


def _cross_validate(args: argparse.Namespace) -> None:
    from brainseg_core.crossval import (
        PostProcessing,
        average_folds,
        cross_validate,
        find_fold_files,
        format_cv_report,
        load_fold,
    )
    from brainseg_core.errors import DataError
    from brainseg_core.out_of_fold import rebuild_missing, stale_folds

    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    for root in (args.cv, *args.ensemble_cv, args.gate_cv):
        if root is None:
            continue
        if args.data is not None:
            series = chosen_series(args)
            for path in rebuild_missing(
                root, args.data, device=args.device, batch_size=args.batch_size, series=series, say=say
            ):
                say(f"rebuilt {path}")
        elif stale := stale_folds(root):
            names = "; ".join(f"{f.name}: {why}" for f, why in stale)
            raise DataError(
                Path(root),
                f"{len(stale)} fold(s) hold a bundle but no usable out_of_fold.npz ({names}): pass DATA, "
                "the dataset they were trained on, to rebuild them",
            )
    files = find_fold_files(args.cv)
    writes = bool(args.write_card or args.write_gate_card)
    _check_complete(files, args.cv, writes=writes)
    folds = [load_fold(f) for f in files]
    others = []
    for root in args.ensemble_cv:
        other = find_fold_files(root)
        _check_complete(other, root, writes=writes)
        others.append(other)
    if others:
        folds = average_folds([folds, *([load_fold(f) for f in other] for other in others)])
        say(f"averaged {1 + len(others)} fold sets: the ensemble's out-of-fold predictions")
    fixed = [
        PostProcessing(),
        PostProcessing(flip_tta=True),
        PostProcessing(largest_component=True),
        PostProcessing(largest_component=True, region_rule=RegionRule.MOST_CONFIDENT),
        PostProcessing(flip_tta=True, largest_component=True),
    ]
    result = cross_validate(folds, fixed=fixed, progress=say)
    print(format_cv_report(result))
    if args.gate_cv:
        from brainseg_core.gate_crossval import format_gate_report, gated_cross_validation, load_gate_fold

        post = gated_post_processing(result)
        gate_files = find_fold_files(args.gate_cv)
        _check_complete(gate_files, args.gate_cv, writes=bool(args.write_gate_card))
        gates = [load_gate_fold(f) for f in gate_files]
        options: dict[str, Any] = {} if args.gate_recall is None else {"target_recall": args.gate_recall}
        if args.gate_reach is not None:
            options["reaches"] = (args.gate_reach,)
        result["gate"] = gated_cross_validation(folds, gates, post=post, **options)
        print()
        print(format_gate_report(result["gate"]))
        if args.write_gate_card:
            from brainseg_core.crossval import fold_models
            from brainseg_core.gate_crossval import apply_gate_to_card

            path = apply_gate_to_card(
                result["gate"],
                args.write_gate_card,
                source=_recorded_source(args.gate_cv),
                folds=fold_models(gate_files),
            )
            print(f"\nwrote the gate threshold and cross-validated metrics into {path}")
    if args.json_out:
        _write_json(args.json_out, result)
    if args.write_card and others:
        from brainseg_core.crossval import apply_thorough_to_card, fold_models

        path = apply_thorough_to_card(
            result,
            args.write_card,
            args.member,
            source=[_recorded_source(root) for root in (args.cv, *args.ensemble_cv)],
            folds=fold_models([*files, *(f for other in others for f in other)]),
        )
        print(
            f"\nwrote the ensemble's post-processing and cross-validated metrics into {path}'s thorough mode"
        )
    elif args.write_card:
        from brainseg_core.crossval import apply_to_card, fold_models

        path = apply_to_card(
            result, args.write_card, source=_recorded_source(args.cv), folds=fold_models(files)
        )
        print(f"\nwrote the chosen post-processing and cross-validated metrics into {path}")


def _recorded_source(folder: str) -> str:
    """How a card names the K-fold folder its metrics came from: relative to the working
    directory when the folder lies under it (a project's own ``folds/...``, the same on every
    clone), else its absolute path."""
    path, here = Path(folder).resolve(), Path.cwd().resolve()
    return path.relative_to(here).as_posix() if path.is_relative_to(here) else str(path)


def _evaluate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from brainseg_core.evaluation import evaluate, format_report
    from brainseg_core.registry import resolve_models
    from brainseg_core.thresholds import Thresholds
    from brainseg_core.training.data import read_patient_list

    ids = read_patient_list(Path(args.patients)) if args.patients else None
    classifier, segmenter = resolve_models(classifier=args.classifier, segmenter=args.segmenter)
    bar = tqdm(desc="evaluating", unit="patient", disable=args.quiet, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    chosen = {"largest_component": args.largest_component, "edge": args.faint_edges}
    given = {k: v for k, v in chosen.items() if v is not None}
    result = evaluate(
        args.data,
        classifier=classifier,
        segmenter=segmenter,
        device=args.device,
        batch_size=args.batch_size,
        patients=ids,
        progress=progress,
        thresholds=Thresholds.from_cards(
            None if classifier is None else classifier.card, segmenter.card, thorough=args.thorough
        ).replace(**given)
        if given
        else None,
        thorough=args.thorough,
        warn=lambda line: tqdm.write(f"brainseg-eval: {line}", file=sys.stderr),
        series=chosen_series(args),
    )
    bar.close()
    print(format_report(result))
    if args.json_out:
        _write_json(args.json_out, result)


if __name__ == "__main__":
    sys.exit(main())
