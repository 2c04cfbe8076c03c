"""Viewer start-up and responsiveness (by hand; prints a table, asserts nothing).

    python bench/gui.py [--patient PATH] [--repeats 3]

Each run starts a fresh ``python`` process (as a user's launch does) that opens the viewer on a
patient with the installed models and reports, in seconds from the process start:

- window: the main window is shown and has painted once;
- first slice: the patient's middle slice is on screen;
- first overlay: the first analysed slice with a tumour outline is on screen;
- analysed: the whole patient is analysed (each launch has an empty user data folder, so no
  saved analysis is restored);

and, while the analysis runs, the latency of switching slices (p50 / p95 over every switch, in ms;
target p95 < 16 ms), apart for the time the models are still loading and the time the networks
run. Then, once the patient is analysed, the same latency with nothing running and while another
patient's worth of slices goes through the networks in the background, results not shown (what
"Analyse all" does while the reader reads a finished patient). Needs a display: run under Xvfb
(``QT_QPA_PLATFORM=xcb``) or offscreen.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
T0 = float(sys.argv[2])
marks = {}
def mark(name):
    marks.setdefault(name, time.time() - T0)
# as `brainseg` does: the model process first, importing torch while this process starts Qt
from brainseg_core.engine import ProcessEngine
engine = ProcessEngine()
import scipy.ndimage  # as `brainseg` does, while the model process imports torch
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
app = QApplication(sys.argv[:1])
from brainseg_app.window import MainWindow
w = MainWindow(engine=engine)
w.resize(1400, 860)
w.show()
app.processEvents()
mark("window")
switches = []
def on_volume(v):
    if v is not None:
        QTimer.singleShot(0, lambda: mark("first slice"))
w.model.events.volume.connect(on_volume)
def on_slice(rec, index):
    s = rec.slice_shown(index)
    if s is not None and s.area_px > 0:
        w.set_slice(index)
        app.processEvents()
        mark("first overlay")
        w.analyser.sliceAnalysed.disconnect(on_slice)  # once: the reader pages on from here
        overlay_shown.append(True)
w.analyser.sliceAnalysed.connect(on_slice)
loading_switches = []
overlay_shown = []
def switch():
    if w.analysis.running and w.volume is not None:
        overlay_shown.clear()
        t = time.perf_counter()
        w.step(1 if w.index < w.n_slices - 1 else -w.index)
        app.processEvents()
        if overlay_shown:  # this bench's own jump to the first overlay ran
            return  # inside that switch: not a switch's latency
        # while the models load (no pipeline yet) or while the networks run
        (switches if w.analyser.pipeline is not None else loading_switches).append(
            1000 * (time.perf_counter() - t)
        )
timer = QTimer(interval=50, timeout=switch)
timer.start()
w.open_path(__import__("pathlib").Path(sys.argv[1]))
QTimer.singleShot(0, w.prepare)
deadline = time.time() + 300
while time.time() < deadline:
    app.processEvents()
    time.sleep(0.002)
    rec = w.current
    if rec is not None and rec.complete and not w.is_busy():
        mark("analysed")
        break
timer.stop()

def measure(seconds, busy=None):
    # switches every 50 ms for `seconds` (or while `busy()` holds)
    out = []
    end = time.time() + seconds
    while time.time() < end and (busy is None or busy()):
        t = time.perf_counter()
        w.step(1 if w.index < w.n_slices - 1 else -w.index)
        app.processEvents()
        out.append(1000 * (time.perf_counter() - t))
        t1 = time.time()
        while time.time() - t1 < 0.05:
            app.processEvents()
            time.sleep(0.002)
    return out

idle_switches = measure(3)
# Another patient analysed in the background (as "Analyse all" does while the reader reads this
# one): the same networks through the viewer's job runner, results not shown.
from brainseg_app.worker import JobRunner
runner = JobRunner()
pipeline, volume = w.analyser.pipeline, w.volume
def other(cancel, progress):
    for _ in range(2):
        for s in pipeline.run(volume, cancel=cancel):
            yield None
runner.start(other)
other_switches = measure(60, lambda: runner.running)
runner.cancel()
print(json.dumps({"marks": marks, "switches_ms": switches, "loading_switches_ms": loading_switches,
                  "idle_switches_ms": idle_switches, "other_switches_ms": other_switches}))
"""


def _run_once(patient: Path) -> dict:
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    # a fresh user data folder: no saved analysis to restore, so every launch runs the networks
    env["BRAINSEG_USER_DATA"] = tempfile.mkdtemp(prefix="brainseg-bench-")
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(patient), repr(t0)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patient", type=Path, help="patient folder (default: the bundled sample)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.patient is None:
        from brainseg_core.resources import resource_path

        args.patient = next(p for p in resource_path("sample").iterdir() if p.is_dir())
    # bytecode for the project, as `make run` leaves it: the launches time the app, not the compiler
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(root / "brainseg_core"), str(root / "app")], check=True
    )
    runs = [_run_once(args.patient) for _ in range(args.repeats)]
    names = ["window", "first slice", "first overlay", "analysed"]
    print(f"patient {args.patient.name}; {args.repeats} launches; seconds from the process start (median)")
    for name in names:
        values = [r["marks"][name] for r in runs if name in r["marks"]]
        print(f"  {name:<14} {statistics.median(values):6.2f}" if values else f"  {name:<14}   n/a")
    phases = (
        ("loading_switches_ms", "while the models load"),
        ("switches_ms", "while the networks run"),
        ("idle_switches_ms", "with nothing running"),
        ("other_switches_ms", "while another patient is analysed"),
    )
    for key, what in phases:
        values = sorted(v for r in runs for v in r.get(key, []))
        if values:
            p50 = values[len(values) // 2]
            p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
            print(f"  slice switch {what}: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({len(values)} switches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
