"""``brainseg-predict``: find tumours in brain-MRI patients and export their masks.

Usage::

    brainseg-predict PATH --out DIR [--classifier BUNDLE] [--segmenter BUNDLE]
                     [--device auto|cpu|cuda|mps] [--precision auto|fp32|bf16|fp16]
                     [--threshold P] [--mask-threshold P] [--min-area PX] [--segment-all]
                     [--[no-]largest-component] [--region-rule largest|most_confident]
                     [--faint-edges P] [--thorough] [--format tif,stack,png,csv]
                     [--overwrite] [--batch-size N]

PATH is one patient (a folder of LGG-layout slice TIFFs, or a multi-page TIFF stack) or a folder
holding many (every patient under it is analysed). Each patient's masks, overlays and report go
to ``DIR/<patient_id>/`` (see :mod:`brainseg_core.export`); ``DIR/summary.csv`` gets one row per
patient of the run (status, tumour slices, volume, slices to review, error), and the same table is
printed at the end. The output folder and existing exports are checked before any model loads.
Progress bars are drawn only on a terminal; a log file gets one plain line per patient. Models: the
explicit bundles, else the active ones (:func:`brainseg_core.registry.resolve_models`).

Exit codes:
    0    every patient was analysed and exported
    1    some patients failed (each is reported; the others were written)
    2    usage error or unusable input path / output folder / device
    3    model problem (no model installed, damaged or incompatible bundle)
    130  interrupted (Ctrl-C); the export in progress is discarded, finished ones are kept
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from brainseg_core.cli._common import EXIT_CODES_HELP, ExitCode, add_series_options, chosen_series
from brainseg_core.compute import DEVICES, PRECISIONS
from brainseg_core.errors import BrainSegError, BundleError, DataError
from brainseg_core.export import (
    DEFAULT_FORMATS,
    FORMATS,
    check_destination,
    check_formats,
    export_results,
)
from brainseg_core.io import find_patients, open_volume, patient_id_of
from brainseg_core.thorough import ThoroughMode, thorough_mode
from brainseg_core.thresholds import RegionRule, Thresholds

if TYPE_CHECKING:  # torch: loaded only once the arguments are parsed (a fast --help)
    from brainseg_core.bundle import ModelBundle
    from brainseg_core.inference import PatientResult, Pipeline

PROG = "brainseg-predict"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = (
    ExitCode.OK,
    ExitCode.FAILED,
    ExitCode.USAGE,
    ExitCode.MODEL,
    ExitCode.INTERRUPTED,
)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} must be >= {low}")
        return value

    return parse


def _formats(text: str) -> tuple[str, ...]:
    try:
        return check_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Find brain tumours slice by slice (classifier + ResUNet) and export the masks, "
        "overlays and a report for each patient.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "path",
        metavar="PATH",
        type=Path,
        help="a patient (folder of TIFF slices, NIfTI files or a DICOM study; a TIFF stack or NIfTI "
        "file) or a dataset root holding patients",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="export folder (DIR/<patient_id>/)")
    p.add_argument("--classifier", metavar="BUNDLE", help="classifier bundle (.json, .safetensors or folder)")
    p.add_argument("--segmenter", metavar="BUNDLE", help="segmenter bundle (.json, .safetensors or folder)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to run (default: auto)")
    p.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="autocast precision (default: auto)"
    )
    p.add_argument(
        "--threshold",
        type=_probability,
        metavar="P",
        help="classifier gate: segment slices with tumour probability >= P (default: the model card's)",
    )
    p.add_argument(
        "--mask-threshold", type=_probability, metavar="P", help="mask probability threshold (default: card)"
    )
    p.add_argument(
        "--min-area",
        type=_int_at_least(0),
        metavar="PX",
        help="drop tumour regions smaller than PX pixels, counted at the model's input size and scaled "
        "to each scan's slice size (default: the model card's)",
    )
    p.add_argument("--segment-all", action="store_true", help="segment every slice, skipping the classifier")
    p.add_argument(
        "--thorough",
        action="store_true",
        help="the segmenter's thorough mode: the second segmenter its card names, averaged with it, at "
        "the ensemble's cross-validated thresholds (about twice the segmenter's cost); a segmenter "
        "that names none reads each slice mirrored too (flip test-time augmentation)",
    )
    p.add_argument(
        "--largest-component",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep only one 3-D tumour region of the patient, or not (it hides the others; "
        "default: the card's)",
    )
    p.add_argument(
        "--region-rule",
        choices=[r.value for r in RegionRule],
        default=None,
        help="which region --largest-component keeps: the most pixels, or the most confident (the "
        "largest sum of p^4; default: the card's)",
    )
    p.add_argument(
        "--faint-edges",
        type=_probability,
        default=None,
        metavar="P",
        help="on slices left without outline, outline the pixels with mask probability >= P that connect "
        "in 3-D to an outline (a tumour's faint first and last slices, flagged for review); 0 turns it "
        "off (default: the card's)",
    )
    p.add_argument(
        "--format",
        dest="formats",
        type=_formats,
        default=DEFAULT_FORMATS,
        metavar="LIST",
        help=f"comma-separated export formats, of {','.join(FORMATS)} "
        f"(default: {','.join(DEFAULT_FORMATS)}); png: annotated key images of the slices with "
        "tumour or a review flag, png-all: of every slice",
    )
    add_series_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing exports in DIR")
    p.add_argument(
        "--batch-size", type=_int_at_least(1), default=16, metavar="N", help="slices per batch (default: 16)"
    )
    return p


def _error(message: str) -> None:
    tqdm.write(f"{PROG}: error: {message}", file=sys.stderr)


def _describe(result: PatientResult) -> str:
    if result.volume_ml is not None:
        volume = f"{result.volume_ml:.2f} mL"
    else:
        volume = f"{result.volume_voxels} voxels (pixel spacing unknown)"
    return f"{result.tumour_slices}/{len(result.slices)} slices with tumour, volume {volume}"


def _interactive() -> bool:
    """Progress bars only on a terminal (in a log file their redraws are escape-code noise)."""
    return sys.stderr.isatty()


def _predict_one(pipeline: Pipeline, path: Path, args: argparse.Namespace) -> tuple[PatientResult, int]:
    """Analyse and export one patient; returns its result and its number of slices to review."""
    volume = open_volume(path, choose=chosen_series(args))
    for line in volume.problem_lines():
        tqdm.write(f"{PROG}: {line}", file=sys.stderr)
    check_destination(volume, args.out, overwrite=args.overwrite)  # before the long part
    with tqdm(
        total=volume.n_slices, desc=volume.patient_id, unit="slice", leave=False, disable=not _interactive()
    ) as bar:
        result = pipeline.analyse(volume, progress=lambda done, total: bar.update(done - bar.n))
    paths = export_results(volume, result, args.out, formats=args.formats, overwrite=args.overwrite)
    tqdm.write(f"{volume.patient_id}: {_describe(result)} -> {paths[-1].parent}")
    from brainseg_core.review import review_reasons

    return result, sum(1 for why in review_reasons(result, truth=volume.masks) if why)


def _check_output(out: Path, patients: list[Path], overwrite: bool) -> None:
    """Before any model loads: the output folder is writable and no export would be clobbered.

    Raises:
        DataError: naming the folder, or the first existing export when ``overwrite`` is off.
    """
    import tempfile

    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder; --out needs a folder")
    existing_parent = next(p for p in (out, *out.parents) if p.exists())
    if not existing_parent.is_dir():
        raise DataError(out, f"cannot be created: {existing_parent} is a file, not a folder")
    try:  # a probe file where the export folder will be (or be created), removed at once
        with tempfile.TemporaryFile(dir=existing_parent):
            pass
    except OSError as exc:
        raise DataError(
            out, f"cannot write into this folder ({exc.strerror or exc}); choose another --out"
        ) from None
    if overwrite:
        return
    existing = [out / patient_id_of(p) for p in patients if (out / patient_id_of(p)).is_dir()]
    existing = [d for d in existing if any(d.iterdir())]
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise DataError(
            existing[0],
            f"an export already exists here{more}; add --overwrite to replace, or choose another --out",
        )


def _write_summary(out: Path, rows: list[list[object]]) -> Path:
    import csv

    from brainseg_core.atomic import atomic_write

    path = out / "summary.csv"
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def _summary_row(path: Path, done: tuple[PatientResult, int] | None, error: str) -> list[object]:
    if done is None:
        return [patient_id_of(path), "failed", "", "", "", "", "", error]
    result, review = done
    ml = "" if result.volume_ml is None else f"{result.volume_ml:.3f}"
    return [
        result.patient_id,
        "done",
        len(result.slices),
        result.tumour_slices,
        result.volume_voxels,
        ml,
        review,
        "",
    ]


SUMMARY_HEADER = [
    "patient_id",
    "status",
    "slices",
    "tumour_slices",
    "tumour_volume_voxels",
    "tumour_volume_ml",
    "slices_to_review",
    "error",
]


def _print_summary(rows: list[list[object]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        cells = [str(c).ljust(w) for c, w in zip(r, widths, strict=False)]
        tqdm.write("  ".join(cells).rstrip())


def _refuse_duplicate_ids(patients: list[Path]) -> None:
    """Exports go to ``OUT/<patient_id>``: two different patients with one id would collide."""
    by_id: dict[str, list[Path]] = {}
    for p in patients:
        by_id.setdefault(patient_id_of(p), []).append(p)
    clashes = {pid: paths for pid, paths in by_id.items() if len(paths) > 1}
    if clashes:
        pid, paths = next(iter(clashes.items()))
        raise DataError(
            paths[1],
            f"is a different patient with the same id as {paths[0]} ({pid}); their exports would "
            f"overwrite each other: run brainseg-predict on each with its own --out",
        )


def _thresholds(
    args: argparse.Namespace, classifier: ModelBundle | None, segmenter: ModelBundle
) -> Thresholds:
    """The cards' thresholds with the ones given on the command line."""
    given = {
        "gate": args.threshold,
        "mask": args.mask_threshold,
        "min_area_px": args.min_area,
        "largest_component": args.largest_component,
        "region_rule": args.region_rule,
        "edge": args.faint_edges,
    }
    card = Thresholds.from_cards(
        None if classifier is None else classifier.card, segmenter.card, thorough=args.thorough
    )
    return card.replace(**{k: v for k, v in given.items() if v is not None})


def _run(args: argparse.Namespace) -> int:
    from brainseg_core.inference import Pipeline
    from brainseg_core.inference.device import resolve_device
    from brainseg_core.registry import resolve_models

    try:
        patients = find_patients(args.path)
        _refuse_duplicate_ids(patients)
        _check_output(args.out, patients, args.overwrite)
        device = resolve_device(args.device)
    except (DataError, ValueError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    try:
        classifier, segmenter = resolve_models(args.classifier, args.segmenter)
        mode = thorough_mode(segmenter) if args.thorough else ThoroughMode((), False)
        pipeline = Pipeline(
            classifier,
            segmenter,
            thresholds=_thresholds(args, classifier, segmenter),
            device=device,
            batch_size=args.batch_size,
            segment_all=args.segment_all,
            precision=args.precision,
            flip_tta=mode.flip_tta,
            ensemble=mode.ensemble,
        )
    except BundleError as exc:
        _error(str(exc))
        return EXIT_MODEL
    t = pipeline.thresholds
    gate = "off (every slice)" if not pipeline.uses_classifier else f">= {t.describe_gate('g')}"
    names = ", ".join(
        f"{kind} {b.card.name}" for kind, b in (("classifier", classifier), ("segmenter", segmenter)) if b
    )
    if args.thorough:
        names += f" (thorough: {mode.describe()})"
    tqdm.write(f"{len(patients)} patient(s) on {pipeline.device}; {names}; classifier gate {gate}")
    if args.region_rule is not None and not t.largest_component:
        tqdm.write(
            "brainseg-predict: --region-rule acts only with one 3-D region kept; every region is kept "
            "here (add --largest-component)",
            file=sys.stderr,
        )
    failed = 0
    rows: list[list[object]] = [list(SUMMARY_HEADER)]
    bar = tqdm(patients, desc="patients", unit="patient", disable=len(patients) < 2 or not _interactive())
    try:
        for path in bar:
            done, error = None, ""
            try:
                done = _predict_one(pipeline, path, args)
            except BrainSegError as exc:
                failed += 1
                error = str(exc)
                _error(error)
            except Exception as exc:  # a bug, not a user error: show it, go on with the others
                failed += 1
                error = f"{path}: unexpected {type(exc).__name__}: {exc}"
                _error(error)
                traceback.print_exc()
            rows.append(_summary_row(path, done, error))
    finally:
        bar.close()
        if len(rows) > 1:
            try:
                summary = _write_summary(args.out, rows)
            except OSError as exc:
                _error(f"{args.out / 'summary.csv'}: cannot write the run summary ({exc.strerror or exc})")
            else:
                tqdm.write(f"\nsummary ({summary}):")
                _print_summary(rows)
    if failed:
        if len(patients) > 1:
            _error(f"{failed} of {len(patients)} patients failed")
        return EXIT_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``brainseg-predict``.

    Args:
        argv: command-line arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code (see the module docstring).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
