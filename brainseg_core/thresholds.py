"""The decisions that turn probabilities into masks: :class:`Thresholds`.

One frozen value travels from the model cards through :class:`~brainseg_core.inference.Pipeline`,
its results, :func:`~brainseg_core.inference.rethreshold`, exports, evaluation, the command-line
tools and the viewer. Its JSON form uses the model card's keys (``tumour_probability``,
``gate_reach_slices``, ``mask_probability``, ``min_area_px``, ``largest_component``,
``region_rule``, ``edge_probability``), so a card,
an export sidecar and a settings file all say the same thing the same way.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from brainseg_core.model_card import ModelCard

__all__ = ["DEFAULT_PROBABILITY", "FAINT_EDGE_PROBABILITY", "MAX_GATE_REACH", "RegionRule", "Thresholds"]

#: Gate and mask threshold when a card does not say otherwise.
DEFAULT_PROBABILITY = 0.5
#: The widest gate reach (slices on either side) a threshold set may ask for.
MAX_GATE_REACH = 3
#: The faint-edge threshold used when a reader turns faint edges on and the card sets none (the
#: value the shipped segmenter's cross-validation chose).
FAINT_EDGE_PROBABILITY = 0.05


class RegionRule(enum.StrEnum):
    """Which of a patient's 3-D regions ``largest_component`` keeps.

    ``LARGEST``: the one with the most pixels (Buda et al.'s post-processing). ``MOST_CONFIDENT``:
    the one with the largest sum of ``p ** 4`` over its pixels (its confident core counts, a wide
    faint false positive does not; :data:`brainseg_core.results.CONFIDENCE_POWER`). The README's
    cross-validation says which each shipped card chose.
    """

    LARGEST = "largest"
    MOST_CONFIDENT = "most_confident"

    def describe(self) -> str:
        """The step in words: ``"largest 3-D region only"``, ``"most confident 3-D region only"``."""
        return "largest 3-D region only" if self is RegionRule.LARGEST else "most confident 3-D region only"


def region_rule(value: object) -> RegionRule:
    """``value`` (a :class:`RegionRule` or its JSON string) as a :class:`RegionRule`.

    Raises:
        ValueError: for anything else; the message lists the choices.
    """
    try:
        return RegionRule(value)  # type: ignore[arg-type]  # anything else is refused below
    except ValueError:
        choices = ", ".join(repr(r.value) for r in RegionRule)
        raise ValueError(f"the region rule must be one of {choices}, got {value!r}") from None


def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every threshold that shapes a mask.

    Args:
        gate: the classifier's tumour probability at or above which a slice is segmented.
        mask: the mask probability at or above which a pixel is tumour.
        min_area_px: connected regions of a slice's mask smaller than this many pixels are removed.
        largest_component: keep only one of the patient's 3-D connected regions, the one
            ``region_rule`` picks.
        region_rule: which region ``largest_component`` keeps (:class:`RegionRule`; a JSON
            string is accepted): the most pixels or the most confident.
        gate_reach: a slice is also segmented when a slice up to this many slices away passes
            the gate (0: only its own probability counts; see
            :attr:`brainseg_core.results.SliceResult.gate_score`).
        edge: on a slice left without outline, the pixels whose mask probability reaches this and
            that connect in 3-D, through such pixels, to the patient's outlines are outlined: a
            tumour's faint first and last slices (0: off; see
            :func:`brainseg_core.results.extend_faint_edges`).

    Raises:
        ValueError: for a probability outside [0, 1], a negative or fractional ``min_area_px``, a
            ``gate_reach`` outside [0, :data:`MAX_GATE_REACH`] or a non-bool
            ``largest_component``, or an unknown ``region_rule``; the message names the field.
    """

    gate: float = DEFAULT_PROBABILITY
    mask: float = DEFAULT_PROBABILITY
    min_area_px: int = 0
    largest_component: bool = False
    gate_reach: int = 0
    edge: float = 0.0
    region_rule: RegionRule = RegionRule.LARGEST

    def __post_init__(self) -> None:
        object.__setattr__(self, "region_rule", region_rule(self.region_rule))
        object.__setattr__(self, "gate", _probability("the classifier gate", self.gate))
        object.__setattr__(self, "mask", _probability("the mask threshold", self.mask))
        object.__setattr__(self, "edge", _probability("the faint-edge threshold", self.edge))
        area = self.min_area_px
        if isinstance(area, bool) or not isinstance(area, int) or area < 0:
            raise ValueError(f"min_area_px must be a whole number of pixels >= 0, got {area!r}")
        reach = self.gate_reach
        if isinstance(reach, bool) or not isinstance(reach, int) or not 0 <= reach <= MAX_GATE_REACH:
            raise ValueError(
                f"gate_reach must be a whole number of slices from 0 to {MAX_GATE_REACH}, got {reach!r}"
            )
        if not isinstance(self.largest_component, bool):
            raise ValueError(f"largest_component must be True or False, got {self.largest_component!r}")

    def describe_gate(self, number: str = ".3g") -> str:
        """The slice gate in words, as the viewer, the report and the CLI show it: its threshold
        and, with a reach, which neighbours pass a slice ("0.132 (or an adjacent slice)",
        "0.519 (or a slice up to 2 away)").

        Args:
            number: the threshold's format (``"g"``: every digit, where a reader compares it
                with probabilities printed in full).
        """
        gate = format(self.gate, number)
        if not self.gate_reach:
            return gate
        if self.gate_reach == 1:
            return f"{gate} (or an adjacent slice)"
        return f"{gate} (or a slice up to {self.gate_reach} away)"

    def describe_region(self) -> str:
        """The whole-volume region step in words (``""`` when off), e.g. "largest 3-D region only"."""
        return self.region_rule.describe() if self.largest_component else ""

    def replace(self, **changes: Any) -> Thresholds:
        """A copy with some fields changed (validated like a new value)."""
        return dataclasses.replace(self, **changes)

    def at_size(self, shape: tuple[int, int], input_size: int) -> Thresholds:
        """These thresholds for slices of ``shape``, ``min_area_px`` being counted at the model's
        ``input_size`` (where a card's value was chosen): it is scaled by the ratio of pixel areas
        (unchanged for LGG's 256 x 256 slices and 256 x 256 models)."""
        scale = shape[0] * shape[1] / (input_size * input_size)
        return self.replace(min_area_px=round(self.min_area_px * scale))

    @classmethod
    def from_cards(
        cls, classifier: ModelCard | None, segmenter: ModelCard, *, thorough: bool = False
    ) -> Thresholds:
        """The thresholds the model cards ship (defaults where a card says nothing).

        ``min_area_px`` is the card's value, measured at the segmenter's input size; the pipeline
        scales it to each volume's slice size.

        Args:
            classifier: the classifier's card (None: the default gate, no reach).
            segmenter: the segmenter's card.
            thorough: the segmenter card's thorough-mode thresholds (``thorough.thresholds``,
                chosen on its ensemble's cross-validation; :mod:`brainseg_core.thorough`) over
                its own, where it has them.
        """
        seg = segmenter.thresholds
        if thorough:
            seg = {**seg, **segmenter.thorough.get("thresholds", {})}
        gate = DEFAULT_PROBABILITY if classifier is None else classifier.thresholds.get("tumour_probability")
        return cls(
            gate=DEFAULT_PROBABILITY if gate is None else gate,
            gate_reach=0 if classifier is None else int(classifier.thresholds.get("gate_reach_slices", 0)),
            mask=seg.get("mask_probability", DEFAULT_PROBABILITY),
            min_area_px=int(seg.get("min_area_px", 0)),
            largest_component=bool(seg.get("largest_component", False)),
            edge=seg.get("edge_probability", 0.0),
            region_rule=seg.get("region_rule", RegionRule.LARGEST),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form, in the model card's vocabulary."""
        return {
            "tumour_probability": self.gate,
            "gate_reach_slices": self.gate_reach,
            "mask_probability": self.mask,
            "min_area_px": self.min_area_px,
            "largest_component": self.largest_component,
            "region_rule": self.region_rule.value,
            "edge_probability": self.edge,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Thresholds:
        """Read :meth:`to_json`'s form; missing keys take the defaults.

        Raises:
            ValueError: for an invalid value.
        """
        return cls(
            gate=data.get("tumour_probability", DEFAULT_PROBABILITY),
            gate_reach=data.get("gate_reach_slices", 0),
            mask=data.get("mask_probability", DEFAULT_PROBABILITY),
            min_area_px=data.get("min_area_px", 0),
            largest_component=data.get("largest_component", False),
            edge=data.get("edge_probability", 0.0),
            region_rule=data.get("region_rule", RegionRule.LARGEST),
        )
