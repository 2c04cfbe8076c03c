"""``brainseg-train``: train a slice classifier or a ResUNet segmenter on a labelled dataset.

Examples::

    brainseg-train segmenter /data/kaggle_3m --out runs/seg --time-budget 4
    brainseg-train classifier /data/kaggle_3m --out runs/cls --arch resnet18 --install
    brainseg-train segmenter /data/kaggle_3m --out runs/seg --resume        # after an interruption
    torchrun --nproc-per-node 4 -m brainseg_core.training segmenter /data/kaggle_3m --out runs/seg

The CPU recipe of the shipped segmenter, cross-validated, then trained for shipping::

    brainseg-train segmenter DATA --out runs/cv --folds 5 --fold all --crop 128 --keep last \
        --val-every 5 --tumour-fraction 0.5 --epochs 1000 --patience 0 --time-budget 17
    brainseg-eval --cv runs/cv                       # nested cross-validated table
    brainseg-train segmenter DATA --out runs/final --val-patients 0 --crop 128 \
        --tumour-fraction 0.5 --epochs 1000 --patience 0 --time-budget 17
    brainseg-eval --cv runs/cv --write-card runs/final   # chosen post-processing + CV metrics

The output folder receives the model bundle (``NAME.safetensors`` + ``NAME.json``, loadable by the
viewer and ``brainseg-predict``), ``metrics.jsonl``, ``learning_curves.png``, ``val_patients.txt``
(feed it to ``brainseg-eval --patients``) and ``checkpoint/`` (for ``--resume``). See
:mod:`brainseg_core.training.loop` for what the trainer does exactly.

There is no ``--workers`` option: the whole data set is read once (by a few threads) and kept in
memory on the training device, so there is no DataLoader whose workers could be tuned.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from brainseg_core.cli._common import (
    EXIT_CODES_HELP,
    ExitCode,
    HelpFormatter,
    add_series_options,
    chosen_series,
    run_reporting_errors,
)
from brainseg_core.model_kind import KIND_NAMES
from brainseg_core.training.config import (
    CLASSIFIER_ARCHS,
    CLASSIFIER_LOSSES,
    SEGMENTER_ARCHS,
    SEGMENTER_LOSSES,
    TrainConfig,
    default_tumour_fraction,
)


@dataclasses.dataclass(frozen=True)
class _KindDefault:
    """``--tumour-fraction`` not given (or given as ``default``): the kind's own sampling."""


def _tumour_fraction(text: str) -> float | _KindDefault | None:
    """A ``--tumour-fraction`` value: a number, ``natural`` (None) or ``default``."""
    if text.lower() in ("natural", "none"):
        return None
    if text == "default":
        return _KindDefault()
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number between 0 and 1 or 'natural', got {text!r}"
        ) from None


def _fold_or_all(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fold number or 'all', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``brainseg-train``."""
    p = argparse.ArgumentParser(
        prog="brainseg-train",
        description="Train a BrainSeg slice classifier or ResUNet segmenter and write a model bundle.",
        formatter_class=HelpFormatter,
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("kind", choices=KIND_NAMES, help="which model to train")
    p.add_argument("data", help="dataset root in the LGG layout (patient folders with _mask.tif files)")
    p.add_argument("--out", required=True, help="output folder (bundle, logs, checkpoints)")
    p.add_argument(
        "--arch",
        choices=SEGMENTER_ARCHS + CLASSIFIER_ARCHS,
        help="architecture (default: resunet for a segmenter, resnet18 for a classifier)",
    )
    p.add_argument("--width", type=int, help="ResUNet base filters / plain CNN width (default: 16 / 32)")
    p.add_argument("--depth", type=int, help="ResUNet depth, number of poolings (default: 4)")
    p.add_argument("--epochs", "--max-epochs", dest="epochs", type=int, default=50, help="most epochs")
    p.add_argument("--batch-size", type=int, default=16, help="slices per step (per process)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, warm-up + cosine)")
    p.add_argument("--image-size", type=int, default=256, help="training / model input size")
    p.add_argument(
        "--val-patients",
        default="0.2",
        help="validation fraction of the patients (0: none; train on all and keep the last weights), or a "
        "text file of validation patient ids",
    )
    p.add_argument(
        "--crop",
        type=int,
        metavar="PX",
        help="train the segmenter on random PX x PX patches, tumour-centred in tumour slices "
        "(5x faster per slice on a CPU at 128 of 256); inference still sees whole slices",
    )
    p.add_argument("--folds", type=int, metavar="K", help="K-fold cross-validation by patient (with --fold)")
    p.add_argument(
        "--fold",
        type=_fold_or_all,
        metavar="I",
        help="the held-out fold, 0..K-1 (replaces --val-patients), or 'all': every fold in turn into "
        "OUT/foldI, skipping finished folds and resuming an interrupted one",
    )
    p.add_argument(
        "--keep",
        choices=("best", "last"),
        default="best",
        help="weights to keep: the best validation epoch, or the last epoch (no selection on the "
        "validation patients: their scores stay honest held-out estimates)",
    )
    p.add_argument("--val-every", type=int, default=1, metavar="N", help="validate every N epochs")
    p.add_argument(
        "--init-from",
        metavar="BUNDLE",
        help="start from this bundle's weights with a fresh schedule (unlike --resume)",
    )
    p.add_argument(
        "--encoder-from",
        metavar="SEGMENTER",
        help="with --arch resunet_gate --init-from GATE: take the stem and encoder from this segmenter "
        "instead (continue a gate onto a retrained segmenter, so the pipeline shares the encoder)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of split, initialisation and augmentation")
    p.add_argument(
        "--loss",
        choices=SEGMENTER_LOSSES + CLASSIFIER_LOSSES,
        help="loss (default: bce_dice for a segmenter, class-weighted bce for a classifier)",
    )
    p.add_argument(
        "--tumour-fraction",
        type=_tumour_fraction,
        default=_KindDefault(),
        help="share of tumour slices in each epoch, or 'natural' (default: 0.7 segmenter, natural "
        "classifier)",
    )
    p.add_argument(
        "--missing-sequence",
        type=float,
        default=0.0,
        metavar="P",
        help="augmentation: per slice, replace pre- and post-contrast each by FLAIR with probability P, "
        "as a scan without that sequence is read (default 0: off)",
    )
    p.add_argument(
        "--intensity",
        choices=("standard", "strong"),
        default="standard",
        help="intensity augmentation: standard (gain 0.9-1.1, offset +-0.1 per slice and sequence) or "
        "strong (gain 0.75-1.25, offset +-0.25, gamma 0.7-1.5, Gaussian noise up to 0.1 SD; "
        "nnU-Net's habit)",
    )
    p.add_argument(
        "--elastic",
        type=float,
        default=0.0,
        metavar="PX",
        help="augmentation: a smooth elastic deformation on top of the rotation and zoom, 7 x 7 "
        "control points each moved by up to PX pixels (default 0: off)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=0,
        metavar="K",
        help="2.5-D input: the ResUNet sees each slice with K neighbouring slices on either side "
        "(3 x (2K+1) channels; default 0). With --init-from a 2-D bundle the neighbours start at zero "
        "weight, so training starts from that model's output",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="autocast precision (auto: bf16 on CUDA and on CPUs with native bf16, else fp32)",
    )
    p.add_argument(
        "--patience", type=int, default=15, help="early stopping: epochs without improvement (0: off)"
    )
    p.add_argument("--time-budget", type=float, metavar="MINUTES", help="stop cleanly after this wall time")
    p.add_argument(
        "--pretrained", action="store_true", help="start from ImageNet weights (torchvision archs)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--name", help="bundle name (default: brainseg-KIND-ARCH-DATE)")
    p.add_argument(
        "--install",
        action="store_true",
        help="also install the bundle in the user's model folder (refused if its validation metric is "
        "below the active model's)",
    )
    p.add_argument("--force", action="store_true", help="with --install: install even a worse model")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_series_options(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``brainseg-train`` arguments.

    ``--tumour-fraction`` not given (or ``default``) becomes the kind's own sampling
    (:func:`~brainseg_core.training.config.default_tumour_fraction`); ``--fold all`` becomes fold 0
    (the folds are then run one after the other).

    Args:
        args: what :func:`build_parser` parsed.

    Returns:
        The settings (not yet resolved).
    """
    tumour_fraction = args.tumour_fraction
    if isinstance(tumour_fraction, _KindDefault):
        tumour_fraction = default_tumour_fraction(args.kind)
    return TrainConfig(
        kind=args.kind,
        data=args.data,
        out=args.out,
        arch=args.arch,
        width=args.width,
        depth=args.depth,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        image_size=args.image_size,
        val_patients=args.val_patients,
        seed=args.seed,
        loss=args.loss,
        tumour_fraction=tumour_fraction,
        missing_sequence=args.missing_sequence,
        intensity=args.intensity,
        elastic_px=args.elastic,
        context=args.context,
        device=args.device,
        precision=args.precision,
        patience=args.patience,
        pretrained=args.pretrained,
        time_budget_min=args.time_budget,
        resume=args.resume,
        name=args.name,
        install=args.install,
        force_install=args.force,
        crop=args.crop,
        folds=args.folds,
        fold=0 if args.fold == "all" else args.fold,
        keep=args.keep,
        val_every=args.val_every,
        init_from=args.init_from,
        encoder_from=args.encoder_from,
        series=chosen_series(args),
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``brainseg-train``.

    Returns:
        The exit code (:class:`~brainseg_core.cli._common.ExitCode`).
    """
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    from brainseg_core.training.loop import train  # torch: after the arguments are parsed

    config = config_from_args(args)

    def log(msg: str) -> None:
        tqdm.write(msg, file=sys.stdout)

    if args.fold != "all":
        return run_reporting_errors(
            "brainseg-train",
            lambda: train(config, log=log, progress=not args.quiet),
            interrupted="interrupted; continue with --resume",
        )
    if args.folds is None:
        print("brainseg-train: error: --fold all needs --folds K", file=sys.stderr)
        return ExitCode.USAGE
    return run_reporting_errors(
        "brainseg-train",
        lambda: _all_folds(config, log=log, progress=not args.quiet),
        interrupted="interrupted; run the same command again to continue",
    )


def _all_folds(config: TrainConfig, *, log: Callable[[str], None], progress: bool) -> None:
    """Train every fold of ``config.folds`` into ``config.out/foldI`` (finished folds are skipped)."""
    from brainseg_core.crossval import OUT_OF_FOLD_FILE
    from brainseg_core.training.checkpoint import has_checkpoint
    from brainseg_core.training.loop import train

    assert config.folds is not None
    for i in range(config.folds):
        out = Path(config.out) / f"fold{i}"
        if (out / OUT_OF_FOLD_FILE).is_file() and any(out.glob("*.json")):
            log(f"fold {i}: already trained in {out}, skipped")
            continue
        resume = has_checkpoint(out)
        name = f"{config.name}-fold{i}" if config.name else None
        log(f"fold {i} of {config.folds}: {'resuming' if resume else 'training'} in {out}")
        train(
            dataclasses.replace(config, out=out, fold=i, resume=resume, name=name), log=log, progress=progress
        )
    log(f"all {config.folds} folds trained; report: brainseg-eval --cv {config.out}")


if __name__ == "__main__":
    sys.exit(main())
