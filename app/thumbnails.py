"""A strip of slice thumbnails under the view; predicted tumour slices get a red frame.

Ground-truth tumour slices (when the folder has masks) get a green bar along the bottom, so a
reader can compare at a glance where the model and the annotation agree. Slices still to review
get an orange dot in the top-left corner, slices whose mask the reader edited a yellow pen mark
(a corner triangle) in the top-right one.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QImage, QPainter, QPen, QPixmap, QPolygon
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem, QWidget

THUMB = 72
REVIEW_COLOUR = QColor(255, 149, 0)
EDITED_COLOUR = QColor(255, 214, 10)


def _grey_pixmap(img: np.ndarray, size: int) -> QPixmap:
    a = np.ascontiguousarray(img)
    qimg = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_Grayscale8)
    return QPixmap.fromImage(qimg.copy()).scaled(
        size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )


class ThumbnailStrip(QListWidget):
    """Horizontal list of slice thumbnails (FLAIR channel).

    Signals:
        sliceClicked: index of the thumbnail the user picked.
    """

    sliceClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setFixedHeight(THUMB + 44)
        self.setSpacing(2)
        self.setUniformItemSizes(True)
        self.setHorizontalScrollMode(QListView.ScrollMode.ScrollPerPixel)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        # The current slice gets a frame, not a tint that would hide the thumbnail.
        self.setStyleSheet(
            "QListWidget::item:selected { background: transparent; border: 2px solid #2a82da; }"
            "QListWidget::item { border: 2px solid transparent; color: #bbb; }"
        )
        self.setToolTip(
            "Slices of this patient. Red frame: tumour outlined; green bar: ground-truth tumour; "
            "orange dot: to review (R); yellow corner: mask edited by you. Click a thumbnail to show "
            "that slice."
        )
        self._base: list[QPixmap] = []
        self._pred: list[bool] = []
        self._gt: list[bool] = []
        self._review: list[bool] = []
        self._edited: list[bool] = []
        self.itemClicked.connect(lambda item: self.sliceClicked.emit(self.row(item)))

    def set_volume(self, images: np.ndarray | None, gt_tumour: list[bool] | None = None) -> None:
        """Build thumbnails for ``(N, H, W, 3)`` images (None clears the strip)."""
        self.clear()
        self._base = []
        if images is None:
            self._pred, self._gt, self._review, self._edited = [], [], [], []
            return
        n = images.shape[0]
        self._pred = [False] * n
        self._review = [False] * n
        self._edited = [False] * n
        self._gt = list(gt_tumour) if gt_tumour is not None else [False] * n
        for i in range(n):
            self._base.append(_grey_pixmap(images[i, :, :, 1], THUMB))
            item = QListWidgetItem(str(i + 1))
            item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter)
            self.addItem(item)
            self._paint(i)

    def set_predicted(self, flags: list[bool]) -> None:
        """Mark the slices whose predicted mask is not empty."""
        for i, flag in enumerate(flags[: len(self._base)]):
            if self._pred[i] != flag:
                self._pred[i] = flag
                self._paint(i)

    def set_marks(self, review: list[bool], edited: list[bool]) -> None:
        """Mark the slices still to review and those whose mask the reader edited."""
        for i in range(len(self._base)):
            r = i < len(review) and review[i]
            e = i < len(edited) and edited[i]
            if (self._review[i], self._edited[i]) != (r, e):
                self._review[i], self._edited[i] = r, e
                self._paint(i)

    def marks(self) -> tuple[list[bool], list[bool]]:
        """Which thumbnails are marked to review and edited."""
        return list(self._review), list(self._edited)

    def predicted(self) -> list[bool]:
        """Which thumbnails are marked as predicted tumour."""
        return list(self._pred)

    def set_current(self, index: int) -> None:
        """Select and scroll to the thumbnail of the displayed slice."""
        if 0 <= index < self.count():
            self.blockSignals(True)
            self.setCurrentRow(index)
            self.blockSignals(False)
            self.scrollToItem(self.item(index), QListWidget.ScrollHint.PositionAtCenter)

    def _paint(self, i: int) -> None:
        pm = QPixmap(self._base[i])
        painter = QPainter(pm)
        if self._gt[i]:
            painter.fillRect(0, pm.height() - 5, pm.width(), 5, QColor(52, 199, 89))
        if self._pred[i]:
            pen = QPen(QColor(255, 59, 48))
            pen.setWidth(4)
            painter.setPen(pen)
            painter.drawRect(2, 2, pm.width() - 4, pm.height() - 4)
        painter.setPen(QPen(QColor(0, 0, 0), 1))
        if self._review[i]:
            painter.setBrush(QBrush(REVIEW_COLOUR))
            painter.drawEllipse(4, 4, 14, 14)
        if self._edited[i]:
            w = pm.width()
            painter.setBrush(QBrush(EDITED_COLOUR))
            painter.drawPolygon(QPolygon([QPoint(w - 20, 2), QPoint(w - 2, 2), QPoint(w - 2, 20)]))
        painter.end()
        item = self.item(i)
        icon = QIcon(pm)
        icon.addPixmap(pm, QIcon.Mode.Selected)  # no selection tint: the frame marks the current slice
        item.setIcon(icon)
        tips = []
        if self._pred[i]:
            tips.append("predicted tumour")
        if self._gt[i]:
            tips.append("ground-truth tumour")
        if self._review[i]:
            tips.append("to review")
        if self._edited[i]:
            tips.append("mask edited by you")
        item.setToolTip(f"Slice {i + 1}" + (f": {', '.join(tips)}" if tips else ""))
