"""What is trained: the model, its loss and its optimiser, on the training device.

- The model is built from the configuration with the global torch seed set to ``seed`` (so its
  initialisation is reproducible), optionally started from a bundle's weights (``--init-from``),
  and kept channels-last on the device.
- The loss is :func:`~brainseg_core.training.losses.build_loss`; a classifier's class balance is
  the tumour share of its sampling (the ``tumour_fraction``, or the natural share).
- AdamW with weight decay :data:`WEIGHT_DECAY` on weights and none on norms and biases (the
  parameters with fewer than two dimensions); fused on CUDA. Gradients are clipped to norm
  :data:`GRAD_CLIP` before each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from brainseg_core.training.config import TrainConfig
from brainseg_core.training.data import SliceSet
from brainseg_core.training.losses import build_loss

WEIGHT_DECAY = 1e-4
GRAD_CLIP = 1.0


@dataclass
class Learner:
    """The model being trained, with what it is trained by.

    Attributes:
        model: the bare model (what is validated and saved).
        net: what a training step calls: ``model``, or its DistributedDataParallel wrapper
            (:func:`~brainseg_core.training.distributed.wrap_model`).
        loss_fn: the training loss (also reported on the validation patients).
        optimizer: AdamW over ``model``'s parameters.
        device: the training device.
        amp: autocast dtype, or None for float32.
    """

    model: nn.Module
    net: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    amp: torch.dtype | None


def build_learner(
    cfg: TrainConfig,
    train_set: SliceSet,
    *,
    device: torch.device,
    amp: torch.dtype | None,
    init_from: Path | None = None,
) -> Learner:
    """Build the model (seeded), its loss and optimiser for ``cfg``, on ``device``.

    Args:
        cfg: the resolved settings.
        train_set: the training slices (their tumour share weighs a classifier's loss under
            natural sampling).
        device: the training device.
        amp: autocast dtype or None.
        init_from: a bundle whose weights start the model (None: fresh initialisation).

    Returns:
        The :class:`Learner` (``net`` is the bare model; wrap it for a distributed run).

    Raises:
        ValueError: if ``init_from`` is another kind, architecture or shape.
        DataError: if ImageNet weights are asked for and missing.
    """
    from brainseg_core.models import build_model

    assert cfg.arch is not None and cfg.loss is not None, "build_learner needs TrainConfig.resolved()"
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, **cfg.arch_args(), **({"weights": "DEFAULT"} if cfg.pretrained else {}))
    if init_from is not None:
        init_from_bundle(model, init_from, cfg)
        if cfg.encoder_from is not None:
            encoder_from_bundle(model, Path(cfg.encoder_from), cfg)
    # torch's stubs have no overload for device and memory format together (the call is valid)
    model = model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    tf = cfg.tumour_fraction
    pos_frac = float(tf) if tf is not None else train_set.n_tumour / len(train_set)
    loss_fn = build_loss(cfg.loss, kind=cfg.kind, positive_fraction=pos_frac if not cfg.segmenter else 0.5)
    return Learner(
        model, model, loss_fn.to(device), build_optimizer(model, lr=cfg.lr, device=device), device, amp
    )


def build_optimizer(model: nn.Module, *, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with :data:`WEIGHT_DECAY` on weights, none on norms and biases (fused on CUDA).

    Args:
        model: the model on its device.
        lr: initial learning rate (the schedule sets it before every step).
        device: the model's device.

    Returns:
        The optimiser.
    """
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        fused=device.type == "cuda",
    )


def init_from_bundle(model: nn.Module, path: Path, cfg: TrainConfig, *, option: str = "--init-from") -> None:
    """Load a bundle's weights into ``model`` after checking it is the same architecture.

    Args:
        model: the freshly built model.
        path: the bundle (card, weights file or folder).
        cfg: the run's settings (kind, arch, width, depth).
        option: the command-line option that named the bundle (for the error messages).

    Raises:
        ValueError: if the bundle is another kind, architecture or shape.
        BundleError: if the bundle cannot be read.
    """
    from brainseg_core.bundle import load_bundle

    bundle = load_bundle(path)
    card = bundle.card
    theirs = bundle.model.state_dict()
    ours = model.state_dict()
    if cfg.arch == "resunet_gate":
        # a gate takes the encoder of a segmenter (or of another gate on the same encoder)
        from brainseg_core.models.encoder_gate import ENCODER_PREFIXES

        if card.arch not in ("resunet", "resunet_gate"):
            raise ValueError(
                f"{path}: --arch resunet_gate needs {option} a resunet segmenter, but the bundle is a "
                f"{card.kind} of architecture {card.arch}"
            )
        keys = [k for k in ours if k.startswith(ENCODER_PREFIXES) or card.arch == "resunet_gate"]
    else:
        if card.kind != cfg.kind or card.arch != cfg.arch:
            raise ValueError(
                f"{path}: {option} needs a {cfg.kind} of architecture {cfg.arch}, but the bundle is a "
                f"{card.kind} of architecture {card.arch}"
            )
        keys = list(ours)
        if len(theirs) != len(ours):
            keys.append("(tensor count)")
    if card.context_slices != cfg.context:
        theirs = widen_context(theirs, ours, have=card.context_slices, want=cfg.context, path=path)
    bad = [k for k in keys if k not in theirs or theirs[k].shape != ours[k].shape]
    if bad:
        raise ValueError(
            f"{path}: {option} weights do not fit this model ({len(bad)} tensors differ, e.g. "
            f"{bad[:1]}); pass the same --width/--depth as the bundle ({card.arch_args}) and a --context "
            f"of at least its {card.context_slices}"
        )
    model.load_state_dict({k: theirs[k].float() for k in keys}, strict=cfg.arch != "resunet_gate")


def encoder_from_bundle(model: nn.Module, path: Path, cfg: TrainConfig) -> None:
    """Replace a ``resunet_gate``'s stem and encoder by those of the segmenter at ``path``.

    Args:
        model: the gate, its head already initialised.
        path: a ``resunet`` segmenter bundle of the same width and depth.
        cfg: the run's settings.

    Raises:
        ValueError: if the bundle is not a ResUNet segmenter or its encoder does not fit.
        BundleError: if the bundle cannot be read.
    """
    from brainseg_core.model_card import read_card, resolve_card_path

    card = read_card(resolve_card_path(path))
    if card.arch != "resunet":
        raise ValueError(
            f"{path}: --encoder-from needs a resunet segmenter, but the bundle is a {card.kind} "
            f"of architecture {card.arch}"
        )
    # a gate initialised from a segmenter takes exactly its stem and encoder
    init_from_bundle(model, path, cfg, option="--encoder-from")


def widen_context(
    theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], *, have: int, want: int, path: Path
) -> dict[str, torch.Tensor]:
    """Fit a bundle's input convolution to more neighbouring slices (2.5-D input).

    The bundle's kernels go to the channels of the slices it saw (the centre ones); the added
    neighbours start at zero weight, so the widened model computes exactly what the bundle did
    until training teaches it to use them.

    Args:
        theirs: the bundle's tensors.
        ours: the new model's tensors.
        have: the bundle's ``context_slices``.
        want: the new model's (``--context``).
        path: the bundle, named in errors.

    Returns:
        ``theirs`` with its input convolution widened.

    Raises:
        ValueError: if the new model sees fewer neighbours than the bundle.
    """
    if want < have:
        raise ValueError(
            f"{path}: the bundle sees {have} neighbouring slice(s) on either side; --context must be at "
            f"least {have} to start from it"
        )
    out = dict(theirs)
    for key, mine in ours.items():
        old = theirs.get(key)
        if old is None or old.ndim != 4 or mine.ndim != 4 or old.shape == mine.shape:
            continue
        if old.shape[0] != mine.shape[0] or old.shape[2:] != mine.shape[2:]:
            continue
        per, rem = divmod(old.shape[1], 2 * have + 1)
        if rem or mine.shape[1] != per * (2 * want + 1):
            continue
        wide = torch.zeros(mine.shape, dtype=old.dtype)
        start = per * (want - have)
        wide[:, start : start + old.shape[1]] = old
        out[key] = wide
    return out
