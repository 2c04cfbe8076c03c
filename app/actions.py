"""The main window's commands: the action table, menus, toolbar, recent-files menu and shortcut list.

Every command is a :class:`QAction` with a name (``MainWindow.actions_by_name``), so a menu entry,
its toolbar button and its keyboard shortcut stay one object, and the Help > Keyboard shortcuts
dialog is generated from the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel, QMenu, QSpinBox, QStyle

from brainseg_app.slice_view import CHANNEL_NAMES
from brainseg_app.viewer_model import EditTool
from brainseg_core.compute import DEVICES
from brainseg_core.edits import MAX_BRUSH_RADIUS, EditKind

if TYPE_CHECKING:
    from brainseg_app.window import MainWindow

PAGE_STEP = 5
MOUSE_HELP: tuple[tuple[str, str], ...] = (
    ("Mouse wheel", "Previous / next slice"),
    ("Ctrl + mouse wheel", "Zoom about the cursor"),
    ("Left or middle drag", "Pan (in edit mode the left button paints, erases or picks a region)"),
    ("Right drag", "Window (horizontal) / level (vertical)"),
    ("Click on the plot", "Show that slice"),
    ("Drag the dashed plot line", "Change the classifier gate"),
)


def _action(
    window: MainWindow,
    text: str,
    slot: Callable[..., object],
    shortcut: str | QKeySequence.StandardKey | list[str] | None = None,
    tip: str = "",
    *,
    checkable: bool = False,
    icon: QStyle.StandardPixmap | None = None,
) -> QAction:
    """One window-wide action calling ``slot`` (with the checked state when ``checkable``)."""
    action = QAction(text, window)
    if shortcut is not None:
        if isinstance(shortcut, list):
            action.setShortcuts([QKeySequence(s) for s in shortcut])
        else:
            action.setShortcut(QKeySequence(shortcut))
    action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    action.setToolTip(tip or text.replace("…", "").replace("&", ""))
    action.setStatusTip(action.toolTip())
    action.setCheckable(checkable)
    if icon is not None:
        action.setIcon(window.style().standardIcon(icon))
    if checkable:
        action.toggled.connect(slot)
    else:
        action.triggered.connect(lambda _checked=False: slot())
    window.addAction(action)
    return action


def build_actions(window: MainWindow) -> dict[str, QAction]:
    """Create every action of ``window`` (its controls and view must exist already).

    Args:
        window: the main window; the actions are added to it and call its methods.

    Returns:
        The actions by name, in the order the shortcuts dialog lists them.
    """
    w = window
    sp = QStyle.StandardPixmap
    acts: dict[str, QAction] = {}

    def a(name: str, *args: object, **kwargs: object) -> None:
        acts[name] = _action(w, *args, **kwargs)  # type: ignore[arg-type]

    a(
        "open_patient",
        "Open &patient folder…",
        w.open_patient_dialog,
        QKeySequence.StandardKey.Open,
        "Open one patient's folder: TIFF slices, NIfTI files or a DICOM study",
        icon=sp.SP_DirOpenIcon,
    )
    a(
        "open_dataset",
        "Open &dataset root…",
        w.open_dataset_dialog,
        "Ctrl+Shift+O",
        "Open a folder of patients (e.g. kaggle_3m) in the patient browser",
        icon=sp.SP_DirIcon,
    )
    a(
        "open_file",
        "Open &file…",
        w.open_file_dialog,
        "Ctrl+Alt+O",
        "Open one patient's file: a NIfTI volume (.nii, .nii.gz), a multi-page TIFF or a DICOM file "
        "(opens its study)",
    )
    a(
        "open_sample",
        "Open sa&mple patient",
        w.open_sample,
        None,
        "Open the patient shipped with BrainSeg",
    )
    a(
        "export",
        "&Export…",
        w.export_dialog,
        "Ctrl+E",
        "Export masks, overlays and a report of this patient",
        icon=sp.SP_DialogSaveButton,
    )
    a(
        "export_all",
        "Export &all analysed…",
        w.export_all_dialog,
        "Ctrl+Shift+E",
        "Export the results of every analysed patient of the dataset",
    )
    a(
        "save_corrections",
        "Save &corrections as training data…",
        w.save_corrections_dialog,
        None,
        "Write the patients whose masks you edited in the dataset's layout (<patient>_<n>.tif + "
        "_mask.tif) into a folder you choose, for brainseg-train",
    )
    a("quit", "&Quit", w.quit, QKeySequence.StandardKey.Quit, "Quit BrainSeg")

    a(
        "run",
        "&Run analysis",
        w.run_current,
        "Ctrl+R",
        "Run the classifier and segmenter on this patient",
        icon=sp.SP_MediaPlay,
    )
    a(
        "cancel",
        "&Cancel analysis",
        w.cancel_analysis,
        "Esc",
        "Stop the running analysis (results so far are kept)",
        icon=sp.SP_MediaStop,
    )
    a(
        "analyse_all",
        "Analyse &all patients",
        w.analyse_all,
        None,
        "Queue every patient of the dataset that is not analysed yet",
    )
    a(
        "spacing",
        "Pixel &spacing…",
        w.spacing_dialog,
        None,
        "Enter the voxel size (TIFFs carry none) to get volumes in mL",
    )
    a(
        "series",
        "DICOM se&ries…",
        w.series_dialog,
        None,
        "Choose which series of the DICOM study are read as pre-contrast, FLAIR and post-contrast",
    )
    a(
        "auto_run",
        "Analyse on &open",
        w.set_auto_run,
        None,
        "Start the analysis as soon as a patient is opened",
        checkable=True,
    )

    a(
        "thorough",
        "&Thorough (two-model ensemble)",
        w.set_thorough,
        None,
        "A second segmenter reads every gated slice and the two are averaged, with the ensemble's "
        "own cross-validated thresholds: about twice the segmenter's time; a segmenter that ships "
        "no ensemble reads each slice mirrored instead. Earlier results are cleared; the shown patient "
        "is analysed again (with auto-run on), and during Analyse all every patient is",
        checkable=True,
    )

    a(
        "active_models",
        "&Active models…",
        w.show_models,
        None,
        "Show the model cards of the active models",
    )
    a(
        "load_bundle",
        "&Load model bundle…",
        w.load_bundle_dialog,
        None,
        "Use a classifier or segmenter bundle (NAME.json + NAME.safetensors) from a file",
    )
    a(
        "manage_models",
        "&Manage models…",
        w.manage_models,
        None,
        "Installed and shipped models: use, remove, install, or go back to the shipped ones",
    )
    a(
        "improve_models",
        "&Improve the models with my corrections…",
        w.improve_models,
        None,
        "Fine-tune the segmenter on the patients you corrected, compare it with the current one on "
        "corrected patients it has not seen, then adopt or discard it",
    )
    a(
        "default_models",
        "Use &shipped models",
        w.use_default_models,
        None,
        "Use the models shipped with BrainSeg (forgets models loaded by hand and installed choices)",
    )

    a("prev_slice", "Previous slice", lambda: w.step(-1), ["Left", "Up"], "Previous slice")
    a("next_slice", "Next slice", lambda: w.step(1), ["Right", "Down"], "Next slice")
    a("page_up", "Back 5 slices", lambda: w.step(-PAGE_STEP), "PgUp", f"Back {PAGE_STEP} slices")
    a(
        "page_down",
        "Forward 5 slices",
        lambda: w.step(PAGE_STEP),
        "PgDown",
        f"Forward {PAGE_STEP} slices",
    )
    a("first_slice", "First slice", lambda: w.set_slice(0), "Home", "First slice")
    a("last_slice", "Last slice", lambda: w.set_slice(10**9), "End", "Last slice")
    a(
        "next_tumour",
        "Next tumour slice",
        lambda: w.jump_tumour(1),
        "N",
        "Next slice with a predicted tumour",
        icon=sp.SP_MediaSeekForward,
    )
    a(
        "prev_tumour",
        "Previous tumour slice",
        lambda: w.jump_tumour(-1),
        ["P", "Shift+N"],
        "Previous slice with a predicted tumour",
        icon=sp.SP_MediaSeekBackward,
    )

    a(
        "next_review",
        "Next slice to review",
        lambda: w.jump_review(1),
        "R",
        "Next slice the analysis is unsure about (not marked reviewed or edited yet)",
    )
    a(
        "prev_review",
        "Previous slice to review",
        lambda: w.jump_review(-1),
        "Shift+R",
        "Previous slice still to review",
    )
    a(
        "mark_reviewed",
        "Mark slice &reviewed",
        w.toggle_reviewed,
        "M",
        "You have looked at this slice: it leaves the review queue (again: put it back)",
        icon=sp.SP_DialogApplyButton,
    )

    # Editing: the tools are checkable; pressing a tool's key again leaves edit mode.
    for name, tool, key, tip in (
        ("tool_brush", EditTool.BRUSH, "B", "Brush: left-drag on the slice adds to the mask"),
        ("tool_eraser", EditTool.ERASER, "E", "Eraser: left-drag on the slice removes from the mask"),
        (
            "tool_region",
            EditTool.DELETE_REGION,
            "D",
            "Delete region: click a region of the mask to remove it (a false positive)",
        ),
    ):
        a(name, tool.label, lambda on, t=tool: w.use_tool(t, on), key, tip, checkable=True)
    a("brush_smaller", "Smaller brush", lambda: w.change_brush(-1), "[", "Brush and eraser 1 px smaller")
    a("brush_larger", "Larger brush", lambda: w.change_brush(1), "]", "Brush and eraser 1 px larger")
    a(
        "fill_holes",
        "Fill &holes",
        lambda: w.edit(EditKind.FILL_HOLES),
        "H",
        "Close the holes inside the outlines of this slice",
    )
    a(
        "keep_set_aside",
        "&Keep the set-aside outline",
        lambda: w.edit(EditKind.ADD_REGION),
        "K",
        "Add the dotted outline (a region the one-region option left out) to this slice's mask",
    )
    a(
        "keep_set_aside_all",
        "Keep the set-aside region on &all its slices",
        lambda: w.edit(EditKind.ADD_REGION_3D),
        "Shift+K",
        "Add the dotted outline and the rest of its 3-D region, on every slice it reaches, to the "
        "masks (one undo step)",
    )
    a(
        "clear_slice",
        "&Clear slice",
        lambda: w.edit(EditKind.CLEAR),
        "Delete",
        "Empty this slice's mask (you say: no tumour here)",
    )
    a(
        "revert_slice",
        "Back to the &model's mask",
        lambda: w.edit(EditKind.REVERT),
        "Shift+Backspace",
        "Drop your edits of this slice: it shows the model's mask again",
    )
    a(
        "undo",
        "&Undo edit",
        w.undo,
        QKeySequence.StandardKey.Undo,
        "Undo the last mask edit of this patient",
        icon=sp.SP_ArrowBack,
    )
    a(
        "redo",
        "&Redo edit",
        w.redo,
        ["Ctrl+Shift+Z", "Ctrl+Y"],
        "Redo the last undone mask edit of this patient",
        icon=sp.SP_ArrowForward,
    )
    a("stop_editing", "Stop editing", w.stop_editing, None, "Leave edit mode: the left button pans again")

    for i, name in enumerate(CHANNEL_NAMES):
        a(
            f"channel_{i}",
            name,
            lambda i=i: w.controls.channel.setCurrentIndex(i),
            str(i + 1),
            f"Show {name}",
        )
    a(
        "toggle_overlay",
        "Show &prediction",
        w.controls.show_overlay.setChecked,
        "O",
        "Show or hide the predicted mask (the ground truth follows its own switch, G)",
        checkable=True,
    )
    a(
        "toggle_gt",
        "Show &ground truth",
        w.controls.show_gt.setChecked,
        "G",
        "Show or hide the ground-truth masks",
        checkable=True,
    )
    a(
        "toggle_contour",
        "Mask &outline",
        w.controls.contour.setChecked,
        "C",
        "Draw mask outlines",
        checkable=True,
    )
    a(
        "toggle_fill",
        "Mask &fill",
        w.controls.fill.setChecked,
        "Shift+F",
        "Paint the inside of the masks",
        checkable=True,
    )
    a(
        "auto_window",
        "&Auto window/level",
        w.view.auto_window,
        "A",
        "Window to the volume's intensity range",
    )
    a("reset_window", "&Reset window/level", w.view.reset_window, "Shift+A", "Full 0-255 range")
    a("fit", "&Fit to window", w.view.fit, ["F", "Ctrl+0"], "Fit the slice in the view")
    a(
        "one_to_one",
        "Actual size (1:1)",
        w.view.one_to_one,
        "Ctrl+1",
        "One image pixel per screen pixel",
    )
    a(
        "zoom_in",
        "Zoom &in",
        lambda: w.view.zoom(1.25),
        ["Ctrl++", "Ctrl+=", "+"],
        "Zoom in",
        icon=None,
    )
    a("zoom_out", "Zoom &out", lambda: w.view.zoom(0.8), ["Ctrl+-", "-"], "Zoom out")
    a("shortcuts", "&Keyboard shortcuts", w.show_shortcuts, ["F1", "?"], "List every shortcut")
    a("about", "&About BrainSeg", w.show_about, None, "Version, licences and credits")
    return acts


def build_menus_and_toolbar(window: MainWindow, acts: dict[str, QAction]) -> tuple[QMenu, QMenu]:
    """Fill ``window``'s menu bar and main toolbar with ``acts``.

    Args:
        window: the main window (its docks must exist already).
        acts: the actions from :func:`build_actions`.

    Returns:
        ``(recent_menu, device_menu)``: File > Open recent (see :func:`fill_recent_menu`) and
        Analysis > Device, whose checked entry follows the device setting.
    """
    mb = window.menuBar()
    file = mb.addMenu("&File")
    for name in ("open_patient", "open_dataset", "open_file", "open_sample"):
        file.addAction(acts[name])
    recent_menu = file.addMenu("Open &recent")
    recent_menu.setToolTipsVisible(True)
    file.addSeparator()
    file.addAction(acts["export"])
    file.addAction(acts["export_all"])
    file.addAction(acts["save_corrections"])
    file.addSeparator()
    file.addAction(acts["quit"])

    view = mb.addMenu("&View")
    for i in range(len(CHANNEL_NAMES)):
        view.addAction(acts[f"channel_{i}"])
    view.addSeparator()
    for name in ("toggle_overlay", "toggle_fill", "toggle_contour", "toggle_gt"):
        view.addAction(acts[name])
    view.addSeparator()
    for name in ("auto_window", "reset_window", "fit", "one_to_one", "zoom_in", "zoom_out"):
        view.addAction(acts[name])
    view.addSeparator()
    panels = view.addMenu("Panels")
    for dock in (window.browser_dock, window.controls_dock, window.results_dock):
        panels.addAction(dock.toggleViewAction())

    nav = mb.addMenu("&Navigate")
    for name in (
        "prev_slice",
        "next_slice",
        "page_up",
        "page_down",
        "first_slice",
        "last_slice",
        "prev_tumour",
        "next_tumour",
    ):
        nav.addAction(acts[name])

    nav.addSeparator()
    for name in ("prev_review", "next_review", "mark_reviewed"):
        nav.addAction(acts[name])

    edit = mb.addMenu("&Edit")
    for name in ("undo", "redo"):
        edit.addAction(acts[name])
    edit.addSeparator()
    for name in ("tool_brush", "tool_eraser", "tool_region", "stop_editing"):
        edit.addAction(acts[name])
    edit.addSeparator()
    for name in (
        "brush_smaller",
        "brush_larger",
        "fill_holes",
        "keep_set_aside",
        "keep_set_aside_all",
        "clear_slice",
        "revert_slice",
    ):
        edit.addAction(acts[name])

    analysis = mb.addMenu("&Analysis")
    for name in ("run", "cancel", "analyse_all"):
        analysis.addAction(acts[name])
    analysis.addSeparator()
    analysis.addAction(acts["auto_run"])
    analysis.addAction(acts["thorough"])
    device_menu = analysis.addMenu("&Device")
    for dev in DEVICES:
        act = device_menu.addAction(dev)
        act.setCheckable(True)
        act.setToolTip(f"Run the networks on {dev}")
        act.triggered.connect(lambda _c=False, d=dev: window.controls.device.setCurrentText(d))
    analysis.addAction(acts["spacing"])
    analysis.addAction(acts["series"])

    model = mb.addMenu("&Model")
    for name in ("active_models", "manage_models", "load_bundle", "default_models"):
        model.addAction(acts[name])
    model.addSeparator()
    model.addAction(acts["improve_models"])

    help_menu = mb.addMenu("&Help")
    help_menu.addAction(acts["shortcuts"])
    help_menu.addAction(acts["about"])
    for menu in (file, view, nav, edit, analysis, model, help_menu):
        menu.setToolTipsVisible(True)

    tb = window.addToolBar("Main")
    tb.setObjectName("main_toolbar")
    tb.setIconSize(QSize(18, 18))
    tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    short = {
        "open_patient": "Patient",
        "open_dataset": "Dataset",
        "run": "Run",
        "cancel": "Cancel",
        "export": "Export",
        "prev_tumour": "Prev. tumour",
        "next_tumour": "Next tumour",
        "fit": "Fit",
        "one_to_one": "1:1",
        "zoom_in": "Zoom +",
        "zoom_out": "Zoom −",
        "toggle_overlay": "Masks",
    }
    groups = (
        ("open_patient", "open_dataset"),
        ("run", "cancel", "export"),
        ("prev_tumour", "next_tumour"),
        ("fit", "one_to_one", "zoom_in", "zoom_out"),
        ("toggle_overlay",),
    )
    for group in groups:
        for name in group:
            acts[name].setIconText(short[name])
            tb.addAction(acts[name])
        tb.addSeparator()
    _build_edit_toolbar(window, acts)
    return recent_menu, device_menu


def _build_edit_toolbar(window: MainWindow, acts: dict[str, QAction]) -> None:
    """The review and edit toolbar on its own row: queue, tools, brush size, one-click edits."""
    window.addToolBarBreak()
    tb = window.addToolBar("Review and edit")
    tb.setObjectName("edit_toolbar")
    tb.setIconSize(QSize(18, 18))
    tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    short = {
        "prev_review": "◀ Review",
        "next_review": "Review ▶",
        "mark_reviewed": "Mark reviewed",
        "tool_brush": "Brush",
        "tool_eraser": "Eraser",
        "tool_region": "Delete region",
        "fill_holes": "Fill holes",
        "keep_set_aside": "Keep dotted",
        "clear_slice": "Clear",
        "revert_slice": "Model's mask",
        "undo": "Undo",
        "redo": "Redo",
    }
    for name in ("prev_review", "next_review", "mark_reviewed"):
        acts[name].setIconText(short[name])
        tb.addAction(acts[name])
    tb.addSeparator()
    for name in ("tool_brush", "tool_eraser", "tool_region"):
        acts[name].setIconText(short[name])
        tb.addAction(acts[name])
    tb.addWidget(QLabel(" Radius "))
    spin = QSpinBox()
    spin.setRange(0, MAX_BRUSH_RADIUS)
    spin.setValue(window.model.brush_radius)
    spin.setSuffix(" px")
    spin.setToolTip("Brush and eraser radius in image pixels ([ smaller, ] larger)")
    spin.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
    spin.valueChanged.connect(window.model.set_brush_radius)
    window.brush_spin = spin
    tb.addWidget(spin)
    tb.addSeparator()
    for name in ("fill_holes", "keep_set_aside", "clear_slice", "revert_slice", "undo", "redo"):
        acts[name].setIconText(short[name])
        tb.addAction(acts[name])


def fill_recent_menu(
    menu: QMenu, recent: list[str], open_path: Callable[[Path], object], clear: Callable[[], object]
) -> None:
    """List the ``recent`` paths in File > Open recent, then "Clear list" (disabled when empty).

    Args:
        menu: the Open recent menu.
        recent: paths, most recent first.
        open_path: called with the chosen path.
        clear: called by "Clear list".
    """
    menu.clear()
    for p in recent:
        act = menu.addAction(p)
        act.setToolTip(f"Open {p}")
        act.triggered.connect(lambda _c=False, p=p: open_path(Path(p)))
    if recent:
        menu.addSeparator()
        clear_act = menu.addAction("Clear list")
        clear_act.setToolTip("Forget the recent folders")
        clear_act.triggered.connect(lambda: clear())
    menu.setEnabled(bool(recent))


def shortcut_rows(actions: Iterable[QAction]) -> list[tuple[str, str]]:
    """``(keys, description)`` of every action with a shortcut, then the mouse bindings."""
    rows = []
    for act in actions:
        keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in act.shortcuts()]
        if keys:
            rows.append((", ".join(keys), act.toolTip()))
    return rows + list(MOUSE_HELP)
