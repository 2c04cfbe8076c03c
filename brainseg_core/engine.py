"""Where the networks run: in this process, or in a process of their own.

An *engine* turns two bundles (a classifier, or None, and a segmenter) into an
:class:`AnalysisPipeline`: something that streams a volume's :class:`SliceResult` objects with
progress and cancel, segments chosen slices, and describes the result it will produce.

- :class:`LocalEngine` builds a :class:`~brainseg_core.inference.Pipeline` here (the command lines,
  and tests whose networks exist only in memory).
- :class:`ProcessEngine` starts a child process at once; the child imports torch while the caller
  goes on (the viewer starts it before it even imports Qt, so the two cores work side by side),
  then loads the bundles and runs the pipeline there. :class:`RemotePipeline` is the caller's
  handle on it. The caller never imports torch, so its thread that draws the window never waits
  for the interpreter lock while torch imports or the networks run; a crash of the networks (out
  of memory, a driver fault) ends the child, not the caller, and the next pipeline starts a new
  child.

The two processes exchange pickled Python objects (volumes, thresholds, results, exceptions) over a
:func:`multiprocessing.Pipe` between this program and its own child; nothing read from a file is
ever unpickled, and model files are still only read as safetensors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from brainseg_core.errors import BrainSegError
from brainseg_core.progress import CancelArg, ProgressFn, cancel_checker

if TYPE_CHECKING:  # numpy and the results load after the child has started (see ProcessEngine)
    from multiprocessing.connection import Connection

    from brainseg_core.io import Volume
    from brainseg_core.model_card import ModelCard
    from brainseg_core.model_ref import ModelRef
    from brainseg_core.results import PatientResult, SliceResult
    from brainseg_core.thresholds import Thresholds

__all__ = [
    "AnalysisPipeline",
    "BundleFile",
    "Engine",
    "EngineError",
    "LocalEngine",
    "ProcessEngine",
    "RemotePipeline",
]

log = logging.getLogger(__name__)

#: How many steps below the caller's CPU priority a :class:`ProcessEngine`'s child runs by default
#: (Linux nice values): the window keeps first claim on a core while the networks run.
BACKGROUND_NICE = 10

#: How often (seconds) the router thread checks the callers' cancel flags and that the child lives.
POLL_SECONDS = 0.1


class EngineError(BrainSegError):
    """The model process stopped (crashed, was killed) or was closed."""


class BundleFile(Protocol):
    """A bundle known by its card and the card's path: a registry
    :class:`~brainseg_core.registry.BundleInfo` or a loaded :class:`~brainseg_core.bundle.ModelBundle`."""

    @property
    def card(self) -> ModelCard:
        """The bundle's card."""
        ...

    @property
    def path(self) -> Path:
        """The card's path (the weights lie beside it)."""
        ...


class AnalysisPipeline(Protocol):
    """What a viewer needs of a pipeline (:class:`~brainseg_core.inference.Pipeline` or
    :class:`RemotePipeline`)."""

    @property
    def device(self) -> object:
        """The device the networks run on (printable)."""
        ...

    @property
    def flip_tta(self) -> bool:
        """Whether mask probabilities average each slice and its mirror."""
        ...

    @property
    def batch_size(self) -> int:
        """Slices per streamed batch."""
        ...

    def replace(self, *, thresholds: Thresholds | None = None) -> AnalysisPipeline:
        """The same pipeline with other thresholds."""
        ...

    def empty_result(self, volume: Volume) -> PatientResult:
        """A result for ``volume`` with no slices yet, carrying this pipeline's settings."""
        ...

    def run(
        self, volume: Volume, *, progress: ProgressFn | None = None, cancel: CancelArg = None
    ) -> Iterator[SliceResult]:
        """Stream ``volume``'s slice results."""
        ...

    def segment_slices(
        self,
        volume: Volume,
        result: PatientResult,
        indices: Sequence[int] | None = None,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelArg = None,
    ) -> PatientResult:
        """Run the segmenter on chosen slices of an existing result."""
        ...


class Engine(Protocol):
    """Builds pipelines from bundles (:class:`LocalEngine`, :class:`ProcessEngine`)."""

    @property
    def alive(self) -> bool:
        """Whether its pipelines can run (a model process that stopped cannot)."""
        ...

    def close(self) -> None:
        """Release what it holds (a model process ends)."""
        ...

    def pipeline(
        self,
        classifier: BundleFile | None,
        segmenter: BundleFile,
        *,
        device: str,
        batch_size: int | None = None,
        thorough: bool = False,
    ) -> AnalysisPipeline:
        """A pipeline of these bundles on ``device`` (see :class:`~brainseg_core.inference.Pipeline`).

        Args:
            classifier: the classifier, or None to segment every slice.
            segmenter: the segmenter.
            device: where to run (``auto``, ``cpu``, ``cuda``, ...).
            batch_size: slices per streamed batch; None: a forward pass's worth on the CPU
                (:data:`~brainseg_core.inference.device.CPU_FORWARD_BATCH`: progress per slice or
                two, Cancel within a fraction of a second), 16 elsewhere.
            thorough: the segmenter's thorough mode (:func:`~brainseg_core.thorough.thorough_mode`:
                its card's ensemble with the ensemble's thresholds, else flip TTA).

        Raises:
            BundleError: when a bundle (or a member of the thorough ensemble) does not load.
            ValueError: for an unavailable device.
        """
        ...


def _build(
    classifier: BundleFile | None,
    segmenter: BundleFile,
    *,
    device: str,
    batch_size: int | None,
    thorough: bool,
) -> Any:
    """A :class:`~brainseg_core.inference.Pipeline` (bundles given by path are loaded)."""
    from brainseg_core.bundle import ModelBundle, load_bundle
    from brainseg_core.inference import Pipeline
    from brainseg_core.inference.device import CPU_FORWARD_BATCH, resolve_device
    from brainseg_core.thorough import thorough_mode

    if batch_size is None:
        batch_size = CPU_FORWARD_BATCH if resolve_device(device).type == "cpu" else 16

    def loaded(b: BundleFile) -> ModelBundle:
        return b if isinstance(b, ModelBundle) else load_bundle(b.path)

    cls = None if classifier is None else loaded(classifier)
    seg = loaded(segmenter)
    mode = thorough_mode(seg) if thorough else None
    return Pipeline(
        cls,
        seg,
        device=device,
        batch_size=batch_size,
        flip_tta=mode is not None and mode.flip_tta,
        ensemble=() if mode is None else mode.ensemble,
    )


class LocalEngine:
    """Runs the networks in this process (loaded bundles are used as they are, in memory)."""

    @property
    def alive(self) -> bool:
        """Always True: this process runs them."""
        return True

    def close(self) -> None:
        """Nothing to release: the networks go with their pipelines."""

    def pipeline(
        self,
        classifier: BundleFile | None,
        segmenter: BundleFile,
        *,
        device: str,
        batch_size: int | None = None,
        thorough: bool = False,
    ) -> AnalysisPipeline:
        """See :meth:`Engine.pipeline`."""
        pipeline: AnalysisPipeline = _build(
            classifier, segmenter, device=device, batch_size=batch_size, thorough=thorough
        )
        return pipeline


# ------------------------------------------------------------------------------------------------
# The child process
# ------------------------------------------------------------------------------------------------
#: Pipelines a child keeps (the newest): a viewer that rebuilds its pipeline (another device, the
#: thorough setting) may still finish a job on the one before; each holds its networks (on a GPU,
#: their memory).
KEPT_PIPELINES = 2

#: Seconds the model process waits, after each load, for another request before it warms the
#: networks up (:meth:`Pipeline.warm_up`). A viewer opening a patient asks for its run within a
#: fraction of a second of the load; that run then does the kernels' first-use setup itself instead
#: of waiting behind a warm-up that does it on noise (``bench/gui.py``, 3 launches, A-B-A-B: the
#: sample's first overlay 2.10 / 2.43 s against 2.50 / 2.51 s, a gain within the day's spread of
#: 0.3 s). The wait delays nothing: a request that comes is handled at once.
WARM_UP_AFTER_S = 0.5


def _portable(exc: BaseException) -> BaseException:
    """``exc`` itself when the caller can rebuild it without importing anything new (a builtin or a
    ``brainseg_core`` exception that survives pickling), else a RuntimeError saying what it was:
    unpickling a torch exception would import torch into the caller."""
    module = type(exc).__module__
    if module == "builtins" or module.split(".")[0] == "brainseg_core":
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # an exception whose arguments cannot be rebuilt
            pass
        else:
            return exc
    # RuntimeError, as torch's own errors are: a failing device still reads as one to the caller
    return RuntimeError(f"{module}.{type(exc).__name__}: {exc}")


class _PipeLogHandler(logging.Handler):
    """Sends the child's log records to the caller, which logs them (the viewer's log file)."""

    def __init__(self, child: _Child) -> None:
        super().__init__(logging.INFO)
        self.child = child

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # logging never fails the work
            self.child.send(("log", 0, (record.name, record.levelno, self.format(record))))


@dataclass
class _Child:
    """The child's state: its pipelines (the newest :data:`KEPT_PIPELINES`) and the jobs' cancel
    flags (made when a job arrives, dropped when it ends)."""

    conn: Connection
    pipelines: dict[int, Any] = field(default_factory=dict)
    warmed: set[tuple[str, ...]] = field(default_factory=set)
    cancels: dict[int, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: tuple[str, int, Any]) -> None:
        with self.send_lock:
            self.conn.send(message)

    def read(self, requests: queue.Queue[tuple[int, tuple[Any, ...]] | None]) -> None:
        """Receive messages until the caller goes or says stop: cancels act at once, jobs queue.

        Any failure here ends the child (after its job), so that the caller sees it stop rather
        than wait for answers that cannot come.
        """
        try:
            while True:
                kind, job, request = self.conn.recv()
                if kind == "stop":
                    break
                with self.lock:
                    if kind == "cancel":
                        flag = self.cancels.get(job)  # None: the job has already ended
                        if flag is not None:
                            flag.set()
                        continue
                    self.cancels[job] = threading.Event()
                requests.put((job, request))
        except (EOFError, OSError):
            pass
        except Exception:  # e.g. out of memory unpickling a volume
            logging.getLogger(__name__).exception("the model process could not read a request")
        requests.put(None)

    def handle(self, job: int, request: tuple[Any, ...]) -> Any:
        """Do one request, sending its items and progress; returns the job's result."""
        with self.lock:
            cancel = self.cancels[job]

        def progress(done: int, total: int) -> None:
            self.send(("progress", job, (done, total)))

        what = request[0]
        if what == "load":
            _, classifier, segmenter, options = request
            p = _build(classifier, segmenter, **options)
            self.pipelines[job] = p
            while len(self.pipelines) > KEPT_PIPELINES:
                del self.pipelines[next(iter(self.pipelines))]
            cls = None if p.classifier is None else p.classifier.card
            members = tuple(m.card.ref for m in p.ensemble)
            return job, str(p.device), p.batch_size, cls, p.segmenter.card, p.flip_tta, members
        pipeline = self.pipelines.get(request[1])
        if pipeline is None:
            raise EngineError("these models were unloaded from the model process; run the analysis again")
        if what == "run":
            _, _, volume, thresholds = request
            for s in pipeline.replace(thresholds=thresholds).run(volume, progress=progress, cancel=cancel):
                self.send(("item", job, s))
            self.warmed.add(self._warm_key(pipeline))
            return None
        if what == "segment":
            _, _, volume, thresholds, result, indices = request
            run = pipeline.replace(thresholds=thresholds)
            done = run.segment_slices(volume, result, indices, progress=progress, cancel=cancel)
            self.warmed.add(self._warm_key(pipeline))
            return done
        raise ValueError(f"unknown request {what!r}")

    @staticmethod
    def _warm_key(pipeline: Any) -> tuple[str, ...]:
        """Which networks on which device a pipeline runs: what a warm-up or a run sets up."""
        cls = pipeline.classifier
        return (
            str(pipeline.device),
            pipeline.segmenter.card.weights_sha256,
            "" if cls is None else cls.card.weights_sha256,
            str(pipeline.flip_tta),
            *(m.card.weights_sha256 for m in pipeline.ensemble),
        )

    def warm_up(self, pipeline: Any) -> None:
        """Warm ``pipeline`` up unless networks like its, on its device, already were (warmed up
        or run)."""
        key = self._warm_key(pipeline)
        if key in self.warmed:
            return
        self.warmed.add(key)
        logging.getLogger(__name__).info("warming the networks up on %s", pipeline.device)
        try:
            pipeline.warm_up()
        except Exception:  # a warm-up that fails costs nothing but the warm-up
            logging.getLogger(__name__).warning("warm-up failed", exc_info=True)

    def finish(self, job: int, message: tuple[str, int, Any]) -> None:
        with self.lock:
            self.cancels.pop(job, None)
        self.send(message)


def _lower_priority(nice: int) -> None:
    """Run this process ``nice`` steps below its parent (Windows: below-normal priority class)."""
    if nice <= 0:
        return
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):  # not allowed here: run at the parent's priority
            os.nice(nice)
    elif sys.platform == "win32":  # pragma: no cover - Windows only
        import ctypes

        below_normal = 0x4000
        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), below_normal)


def _serve(conn: Connection, nice: int, warm_up_after: float = WARM_UP_AFTER_S) -> None:
    """The child's main function: import torch at once, then serve requests until the parent goes."""
    # Ctrl+C in the terminal reaches the whole process group: the parent decides, the child ends
    # when the parent's end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = _Child(conn)
    handler = _PipeLogHandler(child)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    try:
        import brainseg_core.inference  # noqa: F401  # torch and the networks, while the parent starts up
    except Exception:
        logging.getLogger(__name__).exception("the model process could not import the networks")
        raise

    # Below the window only now: the import runs at full priority on its own core while the
    # window builds on the other, and the first result is waiting for it.
    _lower_priority(nice)

    requests: queue.Queue[tuple[int, tuple[Any, ...]] | None] = queue.Queue()
    threading.Thread(target=child.read, args=(requests,), name="brainseg-model-reader", daemon=True).start()
    waiting: list[tuple[int, tuple[Any, ...]] | None] = []  # a request taken while deciding to warm up
    while (item := waiting.pop() if waiting else requests.get()) is not None:
        job, request = item
        try:
            result = child.handle(job, request)
            message: tuple[str, int, Any] = ("done", job, result)
        except Exception as exc:  # every failure goes back to the caller, the child lives on
            message = ("error", job, (_portable(exc), "".join(traceback.format_exception(exc))))
        try:
            child.finish(job, message)
        except (EOFError, OSError):
            break
        if request[0] == "load" and message[0] == "done":
            try:  # whatever comes next (a patient's run, most often): handle it at once
                waiting.append(requests.get(timeout=warm_up_after))
            except queue.Empty:  # nothing: a first run later would pay the kernels' first-use setup
                child.warm_up(child.pipelines[job])


# ------------------------------------------------------------------------------------------------
# The caller's side
# ------------------------------------------------------------------------------------------------
def _is_set(is_cancelled: Callable[[], bool]) -> bool:
    """A caller's cancel flag, read on the router thread (a flag that fails reads as unset)."""
    try:
        return bool(is_cancelled())
    except Exception:
        log.exception("a cancel flag could not be read")
        return False


class ProcessEngine:
    """Runs the networks in a child process, started (and importing torch) at construction.

    The child runs one job at a time, in the order they come; any thread may start one. A router
    thread reads everything the child sends: each job's items, progress and outcome go to that
    job's caller, the child's log records to this process's log, and a job whose cancel flag is
    set is cancelled in the child at once, whether or not its caller still reads. The child is a
    daemon: it ends with this process, and by itself when this process's end of the pipe closes.

    As with every process :mod:`multiprocessing` spawns, a script that makes one must guard its
    own start with ``if __name__ == "__main__":`` (the child imports the script's main module), and
    a frozen application calls :func:`multiprocessing.freeze_support` first.

    Args:
        nice: how many steps below this process's CPU priority the child runs (0: the same).
        warm_up_after: seconds the child waits after a load for another request before it warms
            the networks up (:data:`WARM_UP_AFTER_S`).

    Raises:
        ValueError: for a negative ``nice`` or ``warm_up_after``.
    """

    def __init__(self, *, nice: int = BACKGROUND_NICE, warm_up_after: float = WARM_UP_AFTER_S) -> None:
        if not isinstance(nice, int) or nice < 0:
            raise ValueError(f"nice must be a whole number >= 0, got {nice!r}")
        if not warm_up_after >= 0:
            raise ValueError(f"warm_up_after must be a number of seconds >= 0, got {warm_up_after!r}")
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold Qt and threads
        self._conn, child_end = ctx.Pipe()
        self._process = ctx.Process(
            target=_serve, args=(child_end, nice, float(warm_up_after)), name="brainseg-models", daemon=True
        )
        self._process.start()
        child_end.close()
        self._jobs = itertools.count(1)
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the three below
        self._inboxes: dict[int, queue.SimpleQueue[tuple[str, Any]]] = {}
        self._cancels: dict[int, Callable[[], bool]] = {}
        self._stopped: str | None = None
        self._closed = False
        self._router = threading.Thread(target=self._route, name="brainseg-model-router", daemon=True)
        self._router.start()

    @property
    def alive(self) -> bool:
        """Whether the child runs and answers (False once it stopped or :meth:`close` was called)."""
        return self._stopped is None and not self._closed and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid

    def close(self, timeout: float = 1.0) -> None:
        """Stop the child and wait for it: asked to stop, it ends within ``timeout`` seconds or
        is terminated (it holds nothing of the user's). Running jobs fail with
        :class:`EngineError`. The router thread, which owns the pipe, closes it last."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(EngineError):
            self._send(("stop", 0, None))
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._router.join()

    def pipeline(
        self,
        classifier: BundleFile | None,
        segmenter: BundleFile,
        *,
        device: str,
        batch_size: int | None = None,
        thorough: bool = False,
    ) -> RemotePipeline:
        """See :meth:`Engine.pipeline`: the bundles are loaded (and verified) in the child."""
        request = (
            "load",
            None if classifier is None else _OnDisk(classifier.card, classifier.path),
            _OnDisk(segmenter.card, segmenter.path),
            {"device": device, "batch_size": batch_size, "thorough": thorough},
        )
        key, device_name, batch, cls_card, seg_card, flip_tta, members = self.call(request)
        from brainseg_core.thresholds import Thresholds

        return RemotePipeline(
            engine=self,
            key=key,
            classifier_card=cls_card,
            segmenter_card=seg_card,
            device=device_name,
            thresholds=Thresholds.from_cards(cls_card, seg_card, thorough=bool(members)),
            batch_size=batch,
            flip_tta=flip_tta,
            ensemble=members,
        )

    def call(
        self, request: tuple[Any, ...], *, progress: ProgressFn | None = None, cancel: CancelArg = None
    ) -> Any:
        """Run a request that yields nothing and return its result (see :meth:`stream`)."""
        stream = self.stream(request, progress=progress, cancel=cancel)
        try:
            while True:
                next(stream)
        except StopIteration as stop:
            return stop.value

    def stream(
        self, request: tuple[Any, ...], *, progress: ProgressFn | None = None, cancel: CancelArg = None
    ) -> Generator[Any, None, Any]:
        """Send a request to the child, yield the items it streams back, return its result.

        ``cancel`` is watched by the router: the child's job stops within a batch of its being
        set, even while this generator is suspended. Closing the generator early (the caller
        stopped iterating) cancels the child's job too.

        Raises:
            EngineError: when the child has stopped or stops meanwhile.
            Exception: the request's own exception in the child (``Cancelled`` when ``cancel``
                was set), with the child's traceback as a note.
        """
        job = next(self._jobs)
        inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        with self._lock:
            if not self.alive:
                raise EngineError(self._stopped_text())
            self._inboxes[job] = inbox
        finished = False
        try:
            self._send(("job", job, request))
            with self._lock:  # only now: a cancel must not reach the child before its job
                self._cancels[job] = cancel_checker(cancel)
            while True:
                kind, payload = inbox.get()
                if kind == "progress":
                    if progress is not None:
                        progress(*payload)
                elif kind == "item":
                    yield payload
                elif kind == "done":
                    finished = True
                    return payload
                elif kind == "error":
                    finished = True
                    exc, details = payload
                    exc.add_note(f"In the model process:\n{details}")
                    raise exc
                else:  # "stopped": the router saw the child go
                    finished = True
                    raise EngineError(self._stopped_text())
        finally:
            with self._lock:
                self._inboxes.pop(job, None)
                self._cancels.pop(job, None)
            if not finished:
                with contextlib.suppress(EngineError):
                    self._send(("cancel", job, None))

    # -- the router thread ---------------------------------------------------------------------
    def _route(self) -> None:
        cancelled: set[int] = set()
        try:
            while True:
                if self._conn.poll(POLL_SECONDS):
                    kind, job, payload = self._conn.recv()
                    if kind == "log":
                        name, level, text = payload
                        logging.getLogger(name).log(level, "[model process] %s", text)
                        continue
                    with self._lock:
                        inbox = self._inboxes.get(job)
                    if inbox is not None:  # else: the last words of a job its caller abandoned
                        inbox.put((kind, payload))
                elif not self._process.is_alive():
                    break
                with self._lock:
                    watched = list(self._cancels.items())
                cancelled &= {job for job, _ in watched}
                for job, is_set in watched:
                    if job not in cancelled and _is_set(is_set):
                        self._send(("cancel", job, None))
                        cancelled.add(job)
        except (EOFError, OSError, EngineError):  # the child went, or was asked to stop
            pass
        except Exception:  # a message that cannot be read: stop the child rather than hang its callers
            log.exception("unreadable message from the model process; stopping it")
            self._process.terminate()
        self._process.join(0.5)
        with self._lock:
            self._stopped = self._stopped_text()
            for inbox in self._inboxes.values():
                inbox.put(("stopped", None))
        with self._send_lock:
            self._conn.close()

    def _stopped_text(self) -> str:
        if self._closed:
            return "the model process was closed"
        if self._stopped is not None:
            return self._stopped
        code = self._process.exitcode
        how = (
            f"was killed (signal {-code}), perhaps for lack of memory"
            if code is not None and code < 0
            else f"stopped unexpectedly (exit code {code}); its error is in the log"
        )
        return f"the model process {how}. Run the analysis again to start a new one"

    def _send(self, message: tuple[str, int, Any]) -> None:
        try:
            with self._send_lock:
                self._conn.send(message)
        except (EOFError, OSError):
            self._process.join(0.5)  # reaped: its exit code says how it ended
            raise EngineError(self._stopped_text()) from None


@dataclass(frozen=True)
class _OnDisk:
    """A bundle as sent to the child: its card and path (the child loads the weights itself)."""

    card: ModelCard
    path: Path


@dataclass(frozen=True)
class RemotePipeline:
    """The caller's handle on a pipeline in a :class:`ProcessEngine`'s child (an
    :class:`AnalysisPipeline`).

    Attributes:
        engine: the engine whose child holds the pipeline.
        key: which of the child's pipelines (it keeps the newest :data:`KEPT_PIPELINES`).
        classifier_card: the classifier's card (None: every slice is segmented).
        segmenter_card: the segmenter's card.
        device: the device the child runs the networks on.
        thresholds: the thresholds to apply (``min_area_px`` at the model's input size).
        batch_size: slices per streamed batch.
        flip_tta: whether mask probabilities average each slice and its mirror.
        ensemble: the other segmenters averaged with the segmenter (thorough mode).
    """

    engine: ProcessEngine
    key: int
    classifier_card: ModelCard | None
    segmenter_card: ModelCard
    device: str
    thresholds: Thresholds
    batch_size: int
    flip_tta: bool
    ensemble: tuple[ModelRef, ...] = ()

    def replace(self, *, thresholds: Thresholds | None = None) -> RemotePipeline:
        """The same pipeline with other thresholds."""
        return self if thresholds is None else dataclasses.replace(self, thresholds=thresholds)

    def empty_result(self, volume: Volume) -> PatientResult:
        """A result for ``volume`` with no slices yet, carrying this pipeline's settings."""
        from brainseg_core.results import PatientResult

        cls = self.classifier_card
        return PatientResult(
            patient_id=volume.patient_id,
            slices=[],
            thresholds=self.thresholds.at_size(volume.shape, int(self.segmenter_card.input_size)),
            segmenter=self.segmenter_card.ref,
            classifier=None if cls is None else cls.ref,
            device=self.device,
            spacing=volume.spacing,
            flip_tta=self.flip_tta,
            ensemble=self.ensemble,
        )

    def run(
        self, volume: Volume, *, progress: ProgressFn | None = None, cancel: CancelArg = None
    ) -> Iterator[SliceResult]:
        """Stream ``volume``'s slice results from the child (see ``Pipeline.run``)."""
        request = ("run", self.key, volume, self.thresholds)
        yield from self.engine.stream(request, progress=progress, cancel=cancel)

    def segment_slices(
        self,
        volume: Volume,
        result: PatientResult,
        indices: Sequence[int] | None = None,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelArg = None,
    ) -> PatientResult:
        """Segment chosen slices of ``result`` in the child (see ``Pipeline.segment_slices``)."""
        request = ("segment", self.key, volume, self.thresholds, result, indices)
        done: PatientResult = self.engine.call(request, progress=progress, cancel=cancel)
        return done
