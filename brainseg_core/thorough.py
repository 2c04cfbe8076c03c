"""What a segmenter's "thorough" mode runs (``--thorough`` in the CLIs, Analysis > Thorough).

A segmenter whose card has a ``thorough`` section names other segmenters, bundles beside its card,
whose mask probabilities are averaged with its own (an ensemble), whether each is averaged with its
mirror too (flip test-time augmentation), and the thresholds and metrics that the ensemble's own
cross-validation chose (:mod:`brainseg_core.model_card`). A segmenter without one (a model trained
with ``brainseg-train``) runs flip TTA in thorough mode, with its card's thresholds.

:func:`thorough_mode` reads the section and loads the members, checking each against the hash the
card names; :class:`~brainseg_core.inference.Pipeline` runs them (``ensemble=``,
``flip_tta=``) and takes the section's thresholds by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from brainseg_core.errors import BundleError, ThoroughModeError
from brainseg_core.model_ref import ModelRef

if TYPE_CHECKING:
    import torch

    from brainseg_core.bundle import ModelBundle
    from brainseg_core.model_card import ModelCard

__all__ = ["ThoroughMode", "describe_run", "run_mode", "thorough_mode"]


def describe_run(flip_tta: bool, ensemble: Sequence[ModelRef]) -> str:
    """What a run added to the segmenter, in the viewer's words (``""``: nothing): e.g.
    ``"averaged with brainseg-segmenter-resunet16-seed1"``, ``"flip TTA"``."""
    return ", ".join([f"averaged with {m.name}" for m in ensemble] + (["flip TTA"] if flip_tta else []))


def run_mode(segmenter: ModelCard, thorough: bool) -> tuple[bool, tuple[ModelRef, ...]]:
    """What a pipeline of this segmenter runs, from its card alone (nothing is loaded): whether
    flip TTA, and which other segmenters are averaged in; what a saved analysis must match to be
    current (:meth:`brainseg_core.result_store.ResultStore.load`).

    Args:
        segmenter: the segmenter's card.
        thorough: whether thorough mode is on.
    """
    if not thorough:
        return False, ()
    section = segmenter.thorough
    if not section:
        return True, ()
    members = tuple(ModelRef(m["name"], m["weights_sha256"]) for m in section.get("ensemble", []))
    return bool(section.get("flip_tta", False)), members


@dataclass(frozen=True)
class ThoroughMode:
    """What thorough mode runs for one segmenter.

    Attributes:
        ensemble: the other segmenters averaged with it (loaded and verified).
        flip_tta: whether every member's probabilities are averaged with its mirror's.
    """

    ensemble: tuple[ModelBundle, ...]
    flip_tta: bool

    def describe(self) -> str:
        """In words, for the CLIs and the viewer: ``"2-model ensemble"``, ``"flip TTA"``, ..."""
        parts = [f"{len(self.ensemble) + 1}-model ensemble"] if self.ensemble else []
        return " + ".join([*parts, *(["flip TTA"] if self.flip_tta else [])]) or "nothing more"


def thorough_mode(segmenter: ModelBundle, *, device: str | torch.device = "cpu") -> ThoroughMode:
    """The thorough mode of ``segmenter``: its card's ensemble, or flip TTA when it names none.

    Args:
        segmenter: the segmenter bundle (its card's folder holds the members).
        device: where to load the members.

    Returns:
        The members, loaded (:func:`~brainseg_core.bundle.load_bundle`: hashes and tensors
        checked), and whether flip TTA runs too.

    Raises:
        ThoroughModeError: naming the segmenter's card when a member is missing (what to put
            where), or the member's file when it is not the one the card names (another hash) or
            does not load.
    """
    from brainseg_core.bundle import load_bundle

    section = segmenter.card.thorough
    if not section:
        return ThoroughMode((), True)
    members = []
    for entry in section.get("ensemble", []):
        path = segmenter.path.parent / f"{entry['name']}.json"
        if not path.is_file():
            raise ThoroughModeError(
                segmenter.path,
                f"its thorough mode averages it with {entry['name']}, which is not beside it ({path} is "
                "missing): put that bundle's .json and .safetensors there, or run without thorough mode",
            )
        try:
            member = load_bundle(path, device=device)
        except BundleError as exc:
            raise ThoroughModeError(
                exc.path,
                f"{exc.problem} (it is a member of {segmenter.card.name}'s thorough mode: restore the "
                "bundle that shipped with it, or run without thorough mode)",
            ) from exc
        if member.card.name != entry["name"] or member.card.weights_sha256 != entry["weights_sha256"]:
            raise ThoroughModeError(
                path,
                f"is {member.card.name} with weights {member.card.weights_sha256[:12]}..., but "
                f"{segmenter.card.name}'s thorough mode names {entry['name']} with "
                f"{entry['weights_sha256'][:12]}...: the ensemble was cross-validated with other weights; "
                "restore the bundle that shipped with it, or run without thorough mode",
            )
        members.append(member)
    return ThoroughMode(tuple(members), bool(section.get("flip_tta", False)))
