"""A predicted tumour mask as a DICOM Segmentation (SEG) object referencing the FLAIR series.

The mask is drawn on BrainSeg's display grid; :func:`write_dicom_seg` maps it back to the FLAIR
series' stored grid with :meth:`Geometry.to_source` (axis permutations and flips only, so every
frame is exactly one source instance) and writes a binary highdicom ``Segmentation`` with one
segment, "Tumor" (SNOMED CT: morphologically abnormal structure / neoplasm), created by an
automatic algorithm. PACS viewers, 3D Slicer and OHIF overlay it on the FLAIR series without
registration. highdicom and pydicom load on first use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainseg_core.io.volume import Volume

__all__ = ["SEGMENT_LABEL", "write_dicom_seg"]

#: The label of the one segment BrainSeg writes.
SEGMENT_LABEL = "Tumor"
_SERIES_NUMBER_OFFSET = 1000  # the SEG series number: the FLAIR series' number plus this


def write_dicom_seg(
    volume: Volume, mask: np.ndarray, path: Path, *, algorithm: str, algorithm_version: str
) -> None:
    """Write ``mask`` as a binary DICOM SEG referencing the volume's FLAIR instances.

    Args:
        volume: a volume read from a DICOM study (its ``geometry`` and ``reference_files``, the
            FLAIR instances in stored slice order, are used).
        mask: ``(N, H, W)`` tumour mask on the volume's display grid (non-zero is tumour).
        path: the ``.dcm`` file to write; written atomically (a temporary file in the same folder,
            renamed over ``path``), replacing an existing file.
        algorithm: the name of the models that produced the mask (AlgorithmName).
        algorithm_version: their version (AlgorithmVersion).

    Raises:
        ValueError: when the volume was not read from DICOM (no geometry or reference files), the
            mask does not match the volume's grid, or a reference file does not match the grid.
        OSError: when a reference file cannot be read or ``path`` cannot be written.
    """
    if volume.geometry is None or not volume.reference_files:
        raise ValueError(
            f"{volume.source}: a DICOM SEG needs a volume read from DICOM (its FLAIR instances are "
            "referenced); this volume has no DICOM reference files, export it as NIfTI instead"
        )
    geometry = volume.geometry
    mask = np.asarray(mask)
    if mask.shape != geometry.display_shape:
        raise ValueError(
            f"the mask is {mask.shape}, the volume's grid is {geometry.display_shape} (slices, rows, cols)"
        )
    stored = geometry.to_source(mask != 0)  # (cols, rows, slices)
    frames = np.ascontiguousarray(stored.transpose(2, 1, 0))  # (slices, rows, cols), reference order
    if frames.shape[0] != len(volume.reference_files):
        raise ValueError(
            f"{volume.source}: {len(volume.reference_files)} reference files for {frames.shape[0]} "
            "stored slices; the volume's geometry is not the FLAIR series'"
        )

    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from brainseg_core import __version__
    from brainseg_core.atomic import atomic_write

    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in volume.reference_files]
    for p, ds in zip(volume.reference_files, sources, strict=True):
        if (int(ds.Rows), int(ds.Columns)) != frames.shape[1:]:
            raise ValueError(f"{p}: {ds.Rows}x{ds.Columns} pixels, the FLAIR grid has {frames.shape[1:]}")
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=hd.sr.CodedConcept(
            "49755003", "SCT", "Morphologically abnormal structure"
        ),
        segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm,
            family=codes.cid7162.ArtificialIntelligence,
            version=algorithm_version,
        ),
    )
    flair_number = int(sources[0].get("SeriesNumber") or 0)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=flair_number + _SERIES_NUMBER_OFFSET,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="BrainSeg",
        manufacturer_model_name=algorithm,
        software_versions=f"BrainSeg {__version__}",
        device_serial_number="0",
        content_label="TUMOR",
        content_description=f"Tumour segmented by {algorithm} {algorithm_version}",
        series_description=f"BrainSeg tumour ({algorithm})",
        omit_empty_frames=bool(frames.any()),  # an empty mask still needs one frame
    )
    with atomic_write(path) as tmp:
        seg.save_as(tmp)
