"""Where a patient's voxels are in the scanner: :class:`Geometry`.

BrainSeg shows and analyses every patient as a stack of **axial slices in radiological
convention**: slice index increasing towards the head (superior), image rows from anterior (top)
to posterior (bottom), image columns from the patient's right (left of the screen) to the patient's
left. In nibabel's axis codes this *display grid* is ``("S", "P", "L")``.

A scan is stored in whatever order it was acquired (sagittal, coronal, flipped axes, oblique).
A :class:`Geometry` keeps the stored ("source") grid of the reference sequence (FLAIR) as a
NIfTI-style voxel-to-world affine in RAS+ millimetres, and maps arrays between the source grid and
the display grid by axis permutations and flips only (nibabel's orientation tools). No voxel is
interpolated, so a mask drawn on the display grid goes back to exactly the source voxels: that is
what lets an exported mask overlay the source file in Slicer or ITK-SNAP without registration.
An oblique acquisition is shown on the stored axes nearest to axial (as Slicer and ITK-SNAP do
in their default, non-resliced views); :attr:`Geometry.obliquity_deg` says how far off it is.

TIFF slices carry no geometry: :meth:`Geometry.for_display` builds one for a display-ordered
volume with a known voxel size (a diagonal, RAS-ordered source affine), so even they export to
NIfTI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel import orientations as ornt

from brainseg_core.spacing import Spacing

__all__ = ["DISPLAY_AXCODES", "Geometry"]

#: Axis codes (nibabel convention: the direction each index increases towards) of the display
#: grid ``(slice, row, column)``: superior, posterior, patient's left.
DISPLAY_AXCODES: tuple[str, str, str] = ("S", "P", "L")
_DISPLAY_ORNT = ornt.axcodes2ornt(DISPLAY_AXCODES)
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def _check_affine(affine: np.ndarray) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"a voxel-to-world affine must be a finite 4x4 matrix, got shape {a.shape}")
    if abs(np.linalg.det(a[:3, :3])) < 1e-9:
        raise ValueError("the voxel-to-world affine is singular (a zero voxel size or repeated axes)")
    return a


@dataclass(frozen=True, eq=False)
class Geometry:
    """The reference sequence's stored grid and its mapping to BrainSeg's display grid.

    Args:
        source_affine: ``(4, 4)`` voxel-to-world matrix of the stored array, RAS+ millimetres
            (the NIfTI convention; DICOM's LPS positions are converted by the readers).
        source_shape: shape of the stored 3-D array.
        description: where the geometry came from, for sidecars (e.g. ``"NIfTI sform"``).

    Raises:
        ValueError: for a singular or non-finite affine or a shape that is not 3 positive sizes.
    """

    source_affine: np.ndarray
    source_shape: tuple[int, int, int]
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_affine", _check_affine(self.source_affine))
        shape = tuple(int(s) for s in self.source_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"source_shape must be three positive sizes, got {self.source_shape!r}")
        object.__setattr__(self, "source_shape", shape)
        self.source_affine.setflags(write=False)

    @classmethod
    def for_display(cls, shape: tuple[int, int, int], spacing: Spacing | None) -> Geometry:
        """The geometry of a display-ordered ``(slices, rows, cols)`` volume without headers.

        The slices are taken to be axial in radiological convention. The source grid stores them
        in RAS order (columns reversed, running towards the patient's right; rows reversed,
        running towards anterior) with a diagonal affine of the voxel size (1 mm where unknown)
        and the first voxel at the origin.
        """
        n, h, w = (int(s) for s in shape)
        row = spacing.row_mm if spacing else 1.0
        col = spacing.col_mm if spacing else 1.0
        thick = spacing.thickness_mm if spacing and spacing.thickness_mm else 1.0
        described = "no geometry in the files: taken as axial, radiological"
        return cls(np.diag([col, row, thick, 1.0]), (w, h, n), described)

    # ---------------------------------------------------------------- the source <-> display map

    @property
    def _to_display(self) -> np.ndarray:
        return ornt.ornt_transform(ornt.io_orientation(self.source_affine), _DISPLAY_ORNT)

    @property
    def display_shape(self) -> tuple[int, int, int]:
        """``(slices, rows, cols)`` of the display grid."""
        s = self.source_shape
        t = self._to_display
        out = [0, 0, 0]
        for src_axis, (dst_axis, _flip) in enumerate(t):
            out[int(dst_axis)] = s[src_axis]
        return out[0], out[1], out[2]

    def to_display(self, data: np.ndarray) -> np.ndarray:
        """A source-ordered array (3-D, or 3-D plus trailing axes) in display order.

        Raises:
            ValueError: when the first three sizes are not :attr:`source_shape`.
        """
        if tuple(data.shape[:3]) != self.source_shape:
            raise ValueError(f"expected an array of shape {self.source_shape}, got {data.shape[:3]}")
        return np.ascontiguousarray(ornt.apply_orientation(data, self._to_display))

    def to_source(self, data: np.ndarray) -> np.ndarray:
        """A display-ordered array (e.g. a mask) back in the stored order: the exact inverse.

        Raises:
            ValueError: when the first three sizes are not :attr:`display_shape`.
        """
        if tuple(data.shape[:3]) != self.display_shape:
            raise ValueError(f"expected an array of shape {self.display_shape}, got {data.shape[:3]}")
        back = ornt.ornt_transform(_DISPLAY_ORNT, ornt.io_orientation(self.source_affine))
        return np.ascontiguousarray(ornt.apply_orientation(data, back))

    @property
    def display_affine(self) -> np.ndarray:
        """Voxel-to-world (RAS+ mm) matrix of the display grid ``(slice, row, col)``."""
        return self.source_affine @ ornt.inv_ornt_aff(self._to_display, self.source_shape)

    # ---------------------------------------------------------------- what the reader sees

    @property
    def spacing(self) -> Spacing:
        """Voxel size on the display grid: row and column pitch and slice spacing in mm."""
        # rounded to 0.1 µm: headers store float32, and 0.949999988 mm helps no one
        step = np.round(np.linalg.norm(self.display_affine[:3, :3], axis=0), 4)
        return Spacing(row_mm=float(step[1]), col_mm=float(step[2]), thickness_mm=float(step[0]))

    @property
    def obliquity_deg(self) -> float:
        """Largest angle in degrees between a display axis and the scanner axis it is shown as."""
        a = self.display_affine[:3, :3]
        cosines = np.max(np.abs(a / np.linalg.norm(a, axis=0)), axis=0)
        return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))

    @property
    def edge_labels(self) -> dict[str, str]:
        """Anatomical direction at each edge of a displayed slice: ``{"left", "right", "top",
        "bottom"}`` to one of R, L, A, P, S, I (the direction the screen points to, as on a
        radiology workstation; ``left`` is ``R`` in radiological convention)."""
        codes = ornt.aff2axcodes(self.display_affine)
        row_code, col_code = codes[1], codes[2]
        return {
            "right": col_code,
            "left": _OPPOSITE[col_code],
            "bottom": row_code,
            "top": _OPPOSITE[row_code],
        }

    def same_grid(self, other: Geometry, *, tol_mm: float = 1e-3) -> bool:
        """Whether ``other`` has the same stored shape and voxel positions (within ``tol_mm``)."""
        return self.source_shape == other.source_shape and bool(
            np.allclose(self.source_affine, other.source_affine, atol=tol_mm, rtol=0)
        )

    def to_json(self) -> dict[str, object]:
        """The geometry for a sidecar: source affine and shape, display axes, obliquity."""
        return {
            "source_affine_ras_mm": [[round(float(v), 6) for v in row] for row in self.source_affine],
            "source_shape": list(self.source_shape),
            "display_axes": "".join(DISPLAY_AXCODES),
            "display_shape": list(self.display_shape),
            "obliquity_deg": round(self.obliquity_deg, 3),
            "description": self.description,
        }


def resample_onto(data: np.ndarray, geometry: Geometry, target: Geometry, *, order: int = 1) -> np.ndarray:
    """Resample a source-ordered 3-D array of ``geometry`` onto ``target``'s source grid.

    Each target voxel takes the (trilinearly interpolated, ``order=1``) value at its physical
    position; positions outside the data get 0. Used to bring a sequence acquired on another grid
    onto the FLAIR grid.

    Args:
        data: array of shape ``geometry.source_shape``.
        geometry: where ``data``'s voxels are.
        target: the grid to resample onto.
        order: spline order (0 nearest, 1 linear).

    Returns:
        float32 array of shape ``target.source_shape``.
    """
    from scipy import ndimage

    if tuple(data.shape) != geometry.source_shape:
        raise ValueError(f"expected an array of shape {geometry.source_shape}, got {data.shape}")
    m = np.linalg.inv(geometry.source_affine) @ target.source_affine
    return ndimage.affine_transform(
        data.astype(np.float32, copy=False),
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=target.source_shape,
        order=order,
        mode="constant",
        cval=0.0,
    )
