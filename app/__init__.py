"""BrainSeg viewer: the PySide6 + pyqtgraph desktop application (installed as ``brainseg_app``).

The viewer depends on :mod:`brainseg_core` for everything but the interface: reading patients,
models, inference, export. Start it with ``brainseg`` (see :mod:`brainseg_app.main`) or
:func:`brainseg_app.window.run_viewer`.
"""
