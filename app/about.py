"""Help > About: version, licences, dataset attribution, the active models and the research-use notice."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from brainseg_core import __version__
from brainseg_core.resources import resource_path

DISCLAIMER = (
    "BrainSeg is a research tool. It is not a certified medical device and must not be used on its "
    "own for diagnosis or treatment decisions; every result needs review by a qualified reader."
)

DATASET_ATTRIBUTION = (
    "The shipped models were trained on, and the sample patient is taken from, the LGG Segmentation "
    "Dataset: M. Buda, A. Saha, M. A. Mazurowski, \u201cAssociation of genomic subtypes of lower-grade "
    "gliomas with shape features automatically extracted by a deep learning algorithm\u201d, "
    "Computers in Biology and Medicine 109 (2019) 218\u2013225. Images from The Cancer Imaging Archive "
    "(TCIA), TCGA-LGG collection. Licence: CC BY-NC-SA 4.0; the shipped weights and sample data keep it."
)

#: (display name, distribution names to ask for the installed version, licence)
DEPENDENCIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("PySide6 (Qt for Python)", ("PySide6-Essentials", "PySide6"), "LGPLv3"),
    ("PyTorch", ("torch",), "BSD-3-Clause"),
    ("torchvision", ("torchvision",), "BSD-3-Clause"),
    ("NumPy", ("numpy",), "BSD-3-Clause"),
    ("pyqtgraph", ("pyqtgraph",), "MIT"),
    ("tifffile", ("tifffile",), "BSD-3-Clause"),
    ("safetensors", ("safetensors",), "Apache-2.0"),
    ("platformdirs", ("platformdirs",), "MIT"),
    ("tqdm", ("tqdm",), "MPL-2.0 and MIT"),
    ("Pillow", ("pillow", "Pillow"), "MIT-CMU (HPND)"),
)


def _installed_version(names: tuple[str, ...]) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return ""


def _card_dict(card: Any) -> Mapping[str, Any]:
    """A model card as a mapping, from a ``ModelCard``, a ``ModelBundle`` or a plain dict."""
    card = getattr(card, "card", card)
    if hasattr(card, "to_dict"):
        return card.to_dict()
    if isinstance(card, Mapping):
        return card
    raise TypeError(f"expected a ModelCard, ModelBundle or card dict, got {type(card).__name__}")


def _format_metrics(metrics: Mapping[str, Any], limit: int = 8) -> str:
    """The card's headline metrics (top-level numbers) and, when recorded, on how many patients."""
    items = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        items.append(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}")
    text = ", ".join(items[:limit]) or "none recorded"
    patients = [v.get("n_patients") for v in metrics.values() if isinstance(v, Mapping)]
    patients = [n for n in patients if isinstance(n, int) and not isinstance(n, bool)]
    return f"{text} ({patients[0]} patients)" if patients and items else text


def _models_html(cards: Iterable[Any]) -> str:
    rows = []
    for raw in cards:
        card = _card_dict(raw)
        rows.append(
            "<li><b>{name}</b> ({kind}, {arch}, {size}px), sha256 {sha}&hellip;<br>"
            "validation: {metrics}<br>licence: {licence}</li>".format(
                name=html.escape(str(card.get("name", "?"))),
                kind=html.escape(str(card.get("kind", "?"))),
                arch=html.escape(str(card.get("arch", "?"))),
                size=html.escape(str(card.get("input_size", "?"))),
                sha=html.escape(str(card.get("weights_sha256", ""))[:12]),
                metrics=html.escape(_format_metrics(card.get("metrics") or {})),
                licence=html.escape(str(card.get("license") or "see the model card")),
            )
        )
    return "<ul>" + "".join(rows) + "</ul>" if rows else "<p>No models loaded.</p>"


def about_html(cards: Iterable[Any] = ()) -> str:
    """The About text as HTML.

    Args:
        cards: model cards (``ModelCard``, ``ModelBundle`` or card dicts) of the active models.

    Returns:
        HTML for a ``QTextBrowser``.
    """
    deps = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(_installed_version(dists))}</td>"
        f"<td>{html.escape(licence)}</td></tr>"
        for name, dists, licence in DEPENDENCIES
    )
    return f"""
<h2>BrainSeg {html.escape(__version__)}</h2>
<p>Brain-MRI viewer with a deep-learning second reader: a slice classifier flags tumour slices and a
ResUNet outlines the tumour.</p>
<p><b>{html.escape(DISCLAIMER)}</b></p>
<h3>Active models</h3>
{_models_html(cards)}
<h3>Data</h3>
<p>{html.escape(DATASET_ATTRIBUTION)}
(<a href="https://creativecommons.org/licenses/by-nc-sa/4.0/">licence text</a>)</p>
<h3>Licences</h3>
<p>BrainSeg source code: MIT. Built with Qt {html.escape(qVersion())} and:</p>
<table cellspacing="0" cellpadding="2">
<tr><th align="left">Component</th><th align="left">Version</th><th align="left">Licence</th></tr>
{deps}
</table>
<p>Qt and PySide6 are used under the GNU LGPL v3; their source is available from
<a href="https://code.qt.io">code.qt.io</a>.</p>
"""


class AboutDialog(QDialog):
    """The About dialog; its text is selectable and its links open in the browser.

    Args:
        parent: owning window (or None).
        cards: model cards of the active models (see :func:`about_html`).
    """

    def __init__(self, parent: QWidget | None = None, cards: Iterable[Any] = ()) -> None:
        super().__init__(parent)
        self.setWindowTitle("About BrainSeg")
        icon_path = resource_path("icons", "brainseg-64.png")
        header = QHBoxLayout()
        if icon_path.is_file():
            self.setWindowIcon(QIcon(str(icon_path)))
            logo = QLabel()
            logo.setPixmap(QPixmap(str(icon_path)))
            header.addWidget(logo, 0, Qt.AlignmentFlag.AlignTop)
        self.text = QTextBrowser()
        self.text.setOpenExternalLinks(True)
        self.text.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
            | Qt.TextInteractionFlag.LinksAccessibleByMouse
        )
        self.text.setHtml(about_html(cards))
        header.addWidget(self.text, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(buttons)
        self.resize(640, 560)


def show_about(parent: QWidget | None = None, cards: Iterable[Any] = ()) -> AboutDialog:
    """Open the About dialog (window-modal, returns at once; the dialog deletes itself when closed).

    Args:
        parent: owning window.
        cards: model cards of the active models (``ModelCard``, ``ModelBundle`` or card dicts).

    Returns:
        The open dialog.
    """
    dialog = AboutDialog(parent, cards)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.open()
    return dialog
