"""Classifier-gated segmentation of one patient volume: :class:`Pipeline`.

Its results and the thresholding of stored probabilities live in :mod:`brainseg_core.results`.

For each batch of slices, in slice order, the pipeline

1. normalises the slices exactly as in training (:func:`brainseg_core.preprocessing.model_input`
   with the statistics of the whole volume, computed once per volume, and the neighbouring slices
   a model's card asks for stacked in),
2. runs the classifier and keeps the slices whose gate score is at least the classifier threshold:
   their own tumour probability or, within the gate's reach (``Thresholds.gate_reach``), a
   neighbouring slice's (every slice with ``segment_all=True`` or without a classifier); a slice is
   decided once the probabilities of the ``reach`` slices after it are known,
3. runs the segmenter on those slices, resizes the sigmoid probability map back to the source size
   (:func:`brainseg_core.preprocessing.resize_prob`), thresholds it, and removes connected
   components (8-connected) smaller than ``min_area_px``,
4. yields one :class:`SliceResult` per slice.

Thresholds can be changed afterwards without running the networks: :func:`rethreshold` recomputes
masks, areas and the patient summary from the stored probabilities. A slice that was below the
original classifier gate has no stored mask probability; when a lower gate admits it,
:func:`missing_segmentations` lists it and :meth:`Pipeline.segment_slices` fills it in::

    new = rethreshold(result, result.thresholds.replace(gate=0.2))   # instant
    if missing_segmentations(new):                                     # needs the segmenter
        new = pipeline.segment_slices(volume, new)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from brainseg_core.compute import Device, Precision
from brainseg_core.errors import BundleError, Cancelled, DataError, ThoroughModeError
from brainseg_core.inference.device import (
    ExecutionPlan,
    autocast,
    forward_batch_size,
    is_out_of_memory,
    resolve_device,
    resolve_precision,
    run_batched,
)
from brainseg_core.io.volume import Volume
from brainseg_core.model_kind import ModelKind
from brainseg_core.preprocessing import centre_channels, channel_stats, model_input, resize_prob
from brainseg_core.progress import CancelArg, ProgressFn, cancel_checker
from brainseg_core.results import (
    PatientResult,
    SliceResult,
    missing_segmentations,
    neighbour_probabilities,
    rethreshold,
    threshold_slice,
    volume_steps,
)
from brainseg_core.thresholds import Thresholds

if TYPE_CHECKING:
    from brainseg_core.bundle import ModelBundle
    from brainseg_core.models.encoder_gate import ResUNetGate
    from brainseg_core.models.resunet import ResUNet

__all__ = ["Pipeline", "shares_encoder"]


# ----------------------------------------------------------------------------------------------
# The pipeline.


def shares_encoder(classifier: ModelBundle | None, segmenter: ModelBundle) -> bool:
    """Whether ``classifier`` is an encoder gate on exactly ``segmenter``'s encoder weights.

    Then the pipeline runs the encoder once per slice and the decoder only on the slices the gate
    passes (:mod:`brainseg_core.models.encoder_gate`); a gate on another segmenter's encoder still
    works, at the cost of running its own encoder.

    Args:
        classifier: the classifier bundle, or None.
        segmenter: the segmenter bundle.

    Returns:
        True when the classifier is a ``resunet_gate`` with the same input size whose ``stem.*``
        and ``encoder.*`` tensors equal the segmenter's.
    """
    if classifier is None or classifier.card.arch != "resunet_gate" or segmenter.card.arch != "resunet":
        return False
    if int(classifier.card.input_size) != int(segmenter.card.input_size):
        return False
    from brainseg_core.models.encoder_gate import ENCODER_PREFIXES

    ours, theirs = classifier.model.state_dict(), segmenter.model.state_dict()
    keys = [k for k in ours if k.startswith(ENCODER_PREFIXES)]
    return bool(keys) and all(
        k in theirs and ours[k].shape == theirs[k].shape and torch.equal(ours[k], theirs[k]) for k in keys
    )


def _on_device(x: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
    """An input batch on the plan's device, channels-last where the models are (not on MPS)."""
    x = x.to(plan.device, non_blocking=True)
    return x if plan.device.type == "mps" else x.contiguous(memory_format=torch.channels_last)


class Pipeline:
    """Classifier-gated segmentation of patient volumes (see the module docstring).

    The models are moved to the chosen device in place (the bundles' modules are shared, not
    copied). A pipeline is not changed after construction (make a new one for other thresholds
    or models; :func:`rethreshold` re-applies thresholds without the networks). One pipeline
    runs one volume at a time; use it from one thread.

    ``thresholds.largest_component`` applies to the :class:`PatientResult` (:meth:`analyse`),
    not to streamed slices (:meth:`run`).

    Args:
        classifier: the slice classifier bundle, or None to segment every slice.
        segmenter: the segmenter bundle.
        device: where to run (:class:`~brainseg_core.inference.device.Device`, or ``"cuda:N"``).
        batch_size: slices per streamed batch (progress and cancel granularity) and per forward
            pass on a GPU, where it is halved automatically on out-of-memory (the pipeline moves
            to the CPU if one slice does not fit). On the CPU forward passes take at most
            :data:`~brainseg_core.inference.device.CPU_FORWARD_BATCH` slices, which is faster.
        thresholds: the thresholds to apply (default: the cards', :meth:`Thresholds.from_cards`).
            ``min_area_px`` is counted at the segmenter's input size, like the card's, and is
            scaled to each volume's slice size (:meth:`thresholds_for`); results carry the scaled
            value.
        segment_all: segment every slice without running the classifier.
        precision: the autocast precision (see
            :func:`brainseg_core.inference.device.resolve_precision`).
        flip_tta: average each slice's mask probabilities with those of its left-right mirror
            (test-time augmentation; with ``ensemble``, for every member). Doubles the
            segmenters' cost; its cross-validated effect is in the README.
        ensemble: other segmenters whose mask probabilities are averaged with ``segmenter``'s
            (each with the same input size and context slices); the "thorough" mode
            (:mod:`brainseg_core.thorough`) of a segmenter whose card names them. Each costs a
            segmenter's forward pass on every gated slice. Without ``thresholds`` the segmenter
            card's thorough thresholds apply (:meth:`Thresholds.from_cards`).

    Raises:
        ValueError: for an invalid argument or an unavailable device.
        BundleError: when a bundle of the wrong kind is passed (e.g. classifier and segmenter
            swapped); :class:`~brainseg_core.errors.ThoroughModeError` when an ensemble member is
            not a segmenter or does not read the segmenter's input.
    """

    def __init__(
        self,
        classifier: ModelBundle | None,
        segmenter: ModelBundle,
        *,
        thresholds: Thresholds | None = None,
        device: Device | str | torch.device = Device.AUTO,
        batch_size: int = 16,
        segment_all: bool = False,
        precision: Precision | str = Precision.AUTO,
        flip_tta: bool = False,
        ensemble: Sequence[ModelBundle] = (),
    ) -> None:
        if segmenter is None:
            raise ValueError("a segmenter bundle is required")
        members = tuple(ensemble)
        for bundle, kind in [(classifier, ModelKind.CLASSIFIER), (segmenter, ModelKind.SEGMENTER)]:
            if bundle is not None and bundle.card.kind != kind:
                raise BundleError(bundle.path, f"is a {bundle.card.kind} bundle but was given as the {kind}")
        for member in members:
            ours, theirs = segmenter.card, member.card
            if theirs.kind != ModelKind.SEGMENTER:
                raise ThoroughModeError(
                    member.path,
                    f"is a {theirs.kind} bundle but was given as a member of the segmenter's ensemble",
                )
            if (theirs.input_size, theirs.context_slices) != (ours.input_size, ours.context_slices):
                raise ThoroughModeError(
                    member.path,
                    f"takes {theirs.input_size} px slices with {theirs.context_slices} context slice(s); "
                    f"the segmenter it joins ({ours.name}) takes {ours.input_size} px with "
                    f"{ours.context_slices}: an ensemble's members must read the same input",
                )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if thresholds is not None and not isinstance(thresholds, Thresholds):
            raise TypeError(f"thresholds must be a Thresholds, got {type(thresholds).__name__}")
        self._classifier = classifier
        self._segmenter = segmenter
        self._segment_all = bool(segment_all)
        self._flip_tta = bool(flip_tta)
        self._ensemble = members
        self._batch_size = batch_size
        self._thresholds = (
            Thresholds.from_cards(
                None if classifier is None else classifier.card, segmenter.card, thorough=bool(members)
            )
            if thresholds is None
            else thresholds
        )
        dev = resolve_device(device)
        self._plan = ExecutionPlan(
            dev,
            forward_batch_size(dev, batch_size),
            resolve_precision(precision, dev),
            precision,
            requested_batch_size=batch_size,
        )
        self._stats_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._shared_encoder = shares_encoder(classifier, segmenter)
        self._place(dev)

    # -- what this pipeline is ---------------------------------------------------------------

    @property
    def classifier(self) -> ModelBundle | None:
        """The classifier bundle (None: every slice is segmented)."""
        return self._classifier

    @property
    def segmenter(self) -> ModelBundle:
        """The segmenter bundle."""
        return self._segmenter

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds (``min_area_px`` at the model's input size; see :meth:`thresholds_for`)."""
        return self._thresholds

    @property
    def segment_all(self) -> bool:
        """Whether every slice is segmented without running the classifier."""
        return self._segment_all

    @property
    def flip_tta(self) -> bool:
        """Whether mask probabilities are averaged with those of the mirrored slice."""
        return self._flip_tta

    @property
    def ensemble(self) -> tuple[ModelBundle, ...]:
        """The other segmenters whose mask probabilities are averaged with the segmenter's."""
        return self._ensemble

    @property
    def batch_size(self) -> int:
        """Slices per streamed batch."""
        return self._batch_size

    def replace(self, *, thresholds: Thresholds | None = None, segment_all: bool | None = None) -> Pipeline:
        """A pipeline like this one with other thresholds or gating; this one is not changed.

        The two share the models and the device state, so an out-of-memory fallback to the CPU
        in one moves both (two independent pipelines would share the modules but not the plan).

        Args:
            thresholds: the new thresholds (``min_area_px`` at the model's input size).
            segment_all: segment every slice without running the classifier.

        Raises:
            TypeError: if ``thresholds`` is not a :class:`Thresholds`.
        """
        if thresholds is not None and not isinstance(thresholds, Thresholds):
            raise TypeError(f"thresholds must be a Thresholds, got {type(thresholds).__name__}")
        other = copy.copy(self)
        other._stats_cache = None
        if thresholds is not None:
            other._thresholds = thresholds
        if segment_all is not None:
            other._segment_all = bool(segment_all)
        return other

    # -- device handling -------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The device the networks run on now (the CPU after an out-of-memory fallback)."""
        return self._plan.device

    @property
    def uses_classifier(self) -> bool:
        """Whether the classifier runs (there is one and ``segment_all`` is off)."""
        return self._classifier is not None and not self._segment_all

    def _modules(self) -> list[torch.nn.Module]:
        return [b.model for b in (self.classifier, self.segmenter, *self.ensemble) if b is not None]

    def _place(self, device: torch.device) -> None:
        for m in self._modules():
            m.eval()
            m.to(device)
            if device.type != "mps":
                m.to(memory_format=torch.channels_last)

    def _forward(
        self, model: torch.nn.Module, post: Callable[[torch.Tensor], torch.Tensor]
    ) -> Callable[[torch.Tensor, ExecutionPlan], torch.Tensor]:
        def forward(chunk: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
            x = _on_device(chunk, plan)
            with torch.inference_mode():
                with autocast(plan.device, plan.autocast_dtype):
                    y = model(x)
                return post(y.float()).cpu()

        return forward

    def _classify(self, x: torch.Tensor) -> np.ndarray:
        assert self.classifier is not None
        fwd = self._forward(self.classifier.model, lambda y: torch.sigmoid(y).reshape(len(y), -1)[:, 0])
        return run_batched(fwd, x, self._plan, on_fallback=self._place).numpy().astype(np.float64)

    def _encode_and_gate(self, x: torch.Tensor) -> tuple[list[torch.Tensor], np.ndarray]:
        """The segmenter's encoder and the gate's head on ``x``: the encoder's feature maps (kept
        for :meth:`_decode`) and each slice's tumour probability."""
        assert self.classifier is not None
        head = cast("ResUNetGate", self.classifier.model)
        seg = cast("ResUNet", self.segmenter.model)
        kept: list[list[torch.Tensor]] = []

        def forward(chunk: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
            with torch.inference_mode(), autocast(plan.device, plan.autocast_dtype):
                features = seg.encode(_on_device(chunk, plan))
                tumour = torch.sigmoid(head.classify(features[-1]).float())[:, 0].cpu()
            kept.append(features)  # only once the chunk went through (not on out-of-memory)
            return tumour

        tumour = run_batched(forward, x, self._plan, on_fallback=self._place)
        device = self._plan.device  # the CPU after a fallback midway
        try:
            features = [torch.cat([k[level].to(device) for k in kept]) for level in range(len(kept[0]))]
        except Exception as exc:  # no room for the batch's maps on the accelerator: keep them on the CPU
            if not is_out_of_memory(exc):
                raise
            features = [torch.cat([k[level].cpu() for k in kept]) for level in range(len(kept[0]))]
        return features, tumour.numpy().astype(np.float64)

    def _decode(
        self, features: list[torch.Tensor], x: torch.Tensor, rows: Sequence[int], shape: tuple[int, int]
    ) -> np.ndarray:
        """The segmenter's decoder on rows ``rows`` of :meth:`_encode_and_gate`'s feature maps
        (``x``: the same rows' input, for the mirrored pass of flip TTA); ``(len(rows), H, W)``."""
        seg = cast("ResUNet", self.segmenter.model)
        flip = self.flip_tta

        def forward(chunk: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
            with torch.inference_mode():
                with autocast(plan.device, plan.autocast_dtype):
                    # without autocast (fp32 after a fallback) the kept half-precision maps are cast
                    dtype = torch.float32 if plan.autocast_dtype is None else None
                    rows = [f[chunk.to(f.device)].to(plan.device, dtype=dtype) for f in features]
                    logits = seg.decode(rows).float()
                    prob = torch.sigmoid(logits)
                    if flip:
                        mirrored = seg(_on_device(x[chunk].flip(-1), plan)).float().flip(-1)
                        prob = (prob + torch.sigmoid(mirrored)) / 2
                    prob = self._with_members(prob, x[chunk], plan)
                return resize_prob(prob[:, 0], shape).cpu()

        rows_t = torch.tensor(list(rows), dtype=torch.long)
        return run_batched(forward, rows_t, self._plan, on_fallback=self._place).numpy().astype(np.float32)

    def _with_members(self, prob: torch.Tensor, x: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
        """``prob``, the segmenter's sigmoid probability on the input rows ``x`` (``(len(x), 1,
        size, size)`` at the model's size), averaged with each ensemble member's (each member with
        its mirror under flip TTA); ``prob`` itself without members. Called inside the caller's
        inference mode and autocast."""
        if not self.ensemble:
            return prob
        x = _on_device(x, plan)
        probs = [prob]
        for member in self.ensemble:
            prob = torch.sigmoid(member.model(x).float())
            if self.flip_tta:
                prob = (prob + torch.sigmoid(member.model(x.flip(-1)).float()).flip(-1)) / 2
            probs.append(prob)
        return torch.stack(probs).mean(0)

    def _segment(self, x: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
        seg = self.segmenter.model

        def forward(chunk: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
            xc = _on_device(chunk, plan)
            with torch.inference_mode():
                with autocast(plan.device, plan.autocast_dtype):
                    prob = torch.sigmoid(seg(xc).float())
                    if self.flip_tta:
                        prob = (prob + torch.sigmoid(seg(xc.flip(-1)).float()).flip(-1)) / 2
                    prob = self._with_members(prob, chunk, plan)
                return resize_prob(prob[:, 0], shape).cpu()

        return run_batched(forward, x, self._plan, on_fallback=self._place).numpy().astype(np.float32)

    # -- helpers -----------------------------------------------------------------------------

    def _volume_stats(self, volume: Volume) -> np.ndarray:
        # Normalisation statistics are computed once per volume (reused by segment_slices).
        images = volume.images
        if self._stats_cache is not None and self._stats_cache[0] is images:
            return self._stats_cache[1]
        stats = channel_stats(images)
        self._stats_cache = (images, stats)
        return stats

    @staticmethod
    def _check_volume(volume: Volume) -> None:
        if volume.n_slices == 0:
            raise DataError(volume.source, "has no readable slices to analyse")

    # -- public API --------------------------------------------------------------------------

    def run(
        self, volume: Volume, *, progress: ProgressFn | None = None, cancel: CancelArg = None
    ) -> Iterator[SliceResult]:
        """Analyse ``volume``, yielding one :class:`SliceResult` per slice in slice order.

        Results come batch by batch (``batch_size`` slices); ``progress`` is called with
        ``(0, n)`` first and ``(done, n)`` after each batch, before its results are yielded.

        Args:
            volume: the patient volume.
            progress: ``progress(done, total)`` callback.
            cancel: a ``threading.Event`` or a callable returning True to stop; checked before
                every batch.

        Returns:
            An iterator of :class:`SliceResult`.

        Raises:
            Cancelled: (while iterating) when ``cancel`` is set; nothing is left half-done, the
                results already yielded stay valid.
            DataError: if the volume has no slices.
        """
        self._check_volume(volume)
        is_cancelled = cancel_checker(cancel)
        return self._run(volume, progress, is_cancelled)

    def _run(
        self, volume: Volume, progress: ProgressFn | None, is_cancelled: Callable[[], bool]
    ) -> Iterator[SliceResult]:
        n, shape, spacing = volume.n_slices, volume.shape, volume.spacing
        seg_size = int(self.segmenter.card.input_size)
        classifier = self.classifier if self.uses_classifier else None
        cls_size = seg_size if classifier is None else int(classifier.card.input_size)
        seg_context = self.segmenter.card.context_slices
        cls_context = classifier.card.context_slices if classifier is not None else seg_context
        # one input serves both networks when they take the same size: the wider context of the two
        context = max(seg_context, cls_context) if cls_size == seg_size else cls_context
        shared = classifier is not None and self._shared_encoder and cls_size == seg_size
        thresholds = self.thresholds_for(shape)
        # A slice's gate decision waits for the tumour probabilities of the `reach` slices after it;
        # meanwhile the shared encoder's feature maps of the slices not decided yet are kept.
        reach = thresholds.gate_reach if classifier is not None else 0
        tumour = np.ones(n)
        done = 0  # slices [0, done) are yielded; [done, start) wait for their neighbours
        held_x: torch.Tensor | None = None
        held_features: list[torch.Tensor] = []
        if progress is not None:
            progress(0, n)
        stats = None
        for start in range(0, n, self.batch_size):
            if is_cancelled():
                raise Cancelled(f"{volume.patient_id}: analysis cancelled")
            if stats is None:
                stats = self._volume_stats(volume)
            stop = min(n, start + self.batch_size)
            x = model_input(volume.images, range(start, stop), size=cls_size, stats=stats, context=context)
            x_seg = centre_channels(x, context, seg_context) if seg_size == cls_size else None
            if shared:
                assert x_seg is not None
                features, tumour[start:stop] = self._encode_and_gate(x_seg)
                if held_x is not None:  # the rows of features and x_seg are slices [done, stop)
                    if held_features[0].device != features[0].device:  # an out-of-memory fallback
                        held_features, _ = self._encode_and_gate(held_x)  # since: encode them there
                    x_seg = torch.cat([held_x, x_seg])
                    features = [torch.cat(pair) for pair in zip(held_features, features, strict=True)]
            elif classifier is not None:
                tumour[start:stop] = self._classify(centre_channels(x, context, cls_context))
            final = stop if stop == n else max(done, stop - reach)
            lo, hi = max(0, done - reach), min(n, final + reach)
            near = neighbour_probabilities(tumour[lo:hi], reach)[done - lo :][: final - done]
            passed = [i for i in range(done, final) if max(tumour[i], near[i - done]) >= thresholds.gate]
            maps: dict[int, np.ndarray] = {}
            if passed and shared:
                assert x_seg is not None
                decoded = self._decode(features, x_seg, [i - done for i in passed], shape)
                maps = dict(zip(passed, decoded, strict=True))
            elif passed:
                xs = (
                    x_seg[torch.tensor([i - start for i in passed])]
                    if x_seg is not None and passed[0] >= start
                    else model_input(volume.images, passed, size=seg_size, stats=stats, context=seg_context)
                )
                maps = dict(zip(passed, self._segment(xs, shape), strict=True))
            if shared:
                assert x_seg is not None
                held_x = x_seg[final - done :] if final < stop else None
                held_features = [f[final - done :] for f in features] if final < stop else []
            batch = [
                threshold_slice(
                    SliceResult(
                        index=i,
                        tumour_probability=float(tumour[i]),
                        segmented=False,
                        mask_probability=maps.get(i),
                        mask=np.zeros(shape, bool),
                        area_px=0,
                        area_mm2=None,
                        neighbour_probability=float(near[i - done]),
                    ),
                    thresholds,
                    spacing=spacing,
                    classified=classifier is not None,
                )
                for i in range(done, final)
            ]
            done = final
            if progress is not None:
                progress(done, n)
            yield from batch

    def warm_up(self) -> None:
        """Run the networks once on a batch of noise at the model's input size.

        The CPU's kernels are set up on their first use (oneDNN builds its primitives then): on
        this project's 2-core CPU the decoder's first batch of a session took about 0.3 s more than
        the next ones. A model process warms its pipeline up when no request follows its load
        within :data:`brainseg_core.engine.WARM_UP_AFTER_S` (a run asked for at once does the setup
        itself).
        """
        size = int(self.segmenter.card.input_size)
        n = self._plan.batch_size
        images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        noise = Volume("warm-up", Path("warm-up"), [Path("warm-up")] * n, list(range(1, n + 1)), images)
        every_slice = self.thresholds.replace(gate=0.0)  # the gate passes them all: the decoder runs too
        for _ in self.replace(thresholds=every_slice).run(noise):
            pass

    def thresholds_for(self, shape: tuple[int, int]) -> Thresholds:
        """The thresholds applied to slices of ``shape`` (:meth:`Thresholds.at_size` of the
        segmenter's input size)."""
        return self._thresholds.at_size(shape, int(self.segmenter.card.input_size))

    def analyse(
        self, volume: Volume, *, progress: ProgressFn | None = None, cancel: CancelArg = None
    ) -> PatientResult:
        """Analyse ``volume`` and return the whole :class:`PatientResult`.

        Args:
            volume: the patient volume.
            progress: ``progress(done, total)`` callback.
            cancel: a ``threading.Event`` or a callable returning True to stop.

        Returns:
            The patient result.

        Raises:
            Cancelled: when ``cancel`` is set (no partial result is returned).
            DataError: if the volume has no slices.
        """
        slices = list(self.run(volume, progress=progress, cancel=cancel))
        return self._result(volume, slices)

    def empty_result(self, volume: Volume) -> PatientResult:
        """A result for ``volume`` with no slices yet, carrying this pipeline's settings.

        A viewer that streams :meth:`run` fills it in slice by slice.
        """
        return PatientResult(
            patient_id=volume.patient_id,
            slices=[],
            thresholds=self.thresholds_for(volume.shape),
            segmenter=self.segmenter.card.ref,
            classifier=self.classifier.card.ref if self.classifier and self.uses_classifier else None,
            device=str(self.device),
            spacing=volume.spacing,
            flip_tta=self.flip_tta,
            ensemble=tuple(m.card.ref for m in self.ensemble),
        )

    def _result(self, volume: Volume, slices: list[SliceResult]) -> PatientResult:
        result = dataclasses.replace(self.empty_result(volume), slices=slices)
        return dataclasses.replace(result, slices=volume_steps(slices, result.thresholds, volume.spacing))

    def segment_slices(
        self,
        volume: Volume,
        result: PatientResult,
        indices: Sequence[int] | None = None,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelArg = None,
    ) -> PatientResult:
        """Run the segmenter on chosen slices of an existing result (no classifier).

        Used after :func:`rethreshold` lowered the classifier gate below the probability of
        slices that were never segmented. Tumour probabilities are kept; masks are recomputed
        with ``result``'s thresholds.

        Args:
            volume: the volume ``result`` was computed from.
            result: the result to complete.
            indices: slices to segment (default: :func:`missing_segmentations` of ``result``).
            progress: ``progress(done, total)`` callback over the chosen slices.
            cancel: a ``threading.Event`` or a callable returning True to stop.

        Returns:
            A new :class:`PatientResult`; ``result`` is not modified.

        Raises:
            ValueError: if ``result`` does not belong to ``volume``, was made by another
                segmenter, or an index is out of range.
            Cancelled: when ``cancel`` is set.
        """
        if result.patient_id != volume.patient_id or len(result.slices) != volume.n_slices:
            raise ValueError(
                f"result of {result.patient_id} ({len(result.slices)} slices) does not belong to volume "
                f"{volume.patient_id} ({volume.n_slices} slices)"
            )
        if result.segmenter.sha256 != self.segmenter.card.weights_sha256:
            raise ValueError(
                f"result of {result.patient_id} was segmented by {result.segmenter.name!r}, not by this "
                f"pipeline's {self.segmenter.card.name!r}; analyse the volume again instead"
            )
        ours = (self.flip_tta, tuple(m.card.ref for m in self.ensemble))
        if (result.flip_tta, result.ensemble) != ours:
            raise ValueError(
                f"result of {result.patient_id} was made in another mode (thorough or not) than this "
                "pipeline runs; analyse the volume again instead"
            )
        todo = missing_segmentations(result) if indices is None else sorted(set(indices))
        if any(not 0 <= i < volume.n_slices for i in todo):
            raise ValueError(f"slice indices must be in [0, {volume.n_slices}), got {todo}")
        is_cancelled = cancel_checker(cancel)
        slices = list(result.slices)
        size = int(self.segmenter.card.input_size)
        stats = self._volume_stats(volume) if todo else None
        if progress is not None:
            progress(0, len(todo))
        for start in range(0, len(todo), self.batch_size):
            if is_cancelled():
                raise Cancelled(f"{volume.patient_id}: segmentation cancelled")
            chunk = todo[start : start + self.batch_size]
            x = model_input(
                volume.images, chunk, size=size, stats=stats, context=self.segmenter.card.context_slices
            )
            for i, prob in zip(chunk, self._segment(x, volume.shape), strict=True):
                slices[i] = dataclasses.replace(slices[i], mask_probability=prob)
            if progress is not None:
                progress(min(len(todo), start + self.batch_size), len(todo))
        return rethreshold(dataclasses.replace(result, slices=slices))
