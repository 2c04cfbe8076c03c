"""``brainseg-finetune`` (python -m brainseg_core.cli.finetune): JSON progress lines, the result, cancel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from brainseg_core.cli.finetune import main
from brainseg_core.finetune import RESULT_FILE, FinetuneResult
from tests.support import make_patient, save_tiny_bundle

REPO = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "1", "--batch-size", "4", "--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ftcli")
    seg = save_tiny_bundle(root / "parent", "segmenter", input_size=32, seed=0)
    save_tiny_bundle(root / "parent", "classifier", input_size=32, seed=1)
    for i in range(3):
        make_patient(root / "corr", f"TCGA_CC_{i:04d}_20000101", n=6, size=32, tumour_slices=(2, 3), seed=i)
    return seg, root / "corr"


def _classifier(seg: Path) -> Path:
    return seg.parent / "tiny-cls.json"


def _command(seg: Path, corr: Path, out: Path, *extra: str) -> list[str]:
    args = [str(seg), str(corr), "--out", str(out), "--json", *TINY, *extra]
    return [sys.executable, "-m", "brainseg_core.cli.finetune", *args]


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path}


def test_json_lines_end_with_the_result(inputs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    """Both models: stages for both trainings, one progress over both, both candidates in the result."""
    seg, corr = inputs
    args = [str(seg), str(corr), "--out", str(tmp_path / "ft"), "--json", *TINY[:-2]]
    assert main([*args, "--classifier", str(_classifier(seg))]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert set(kinds) == {"stage", "log", "progress", "result"} and kinds[-1] == "result"
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    assert stages == ["prepare", "train", "train_classifier", "evaluate"]
    progress = [(e["done"], e["total"]) for e in events if e["event"] == "progress"]
    assert progress[-1][0] == progress[-1][1] > 0
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    # the classifier's steps come after the segmenter's, on the same bar
    cls_start = next(i for i, e in enumerate(events) if e.get("stage") == "train_classifier")
    eval_start = next(i for i, e in enumerate(events) if e.get("stage") == "evaluate")
    seg_done = max(e["done"] for e in events[:cls_start] if e["event"] == "progress")
    cls_done = [e["done"] for e in events[cls_start:eval_start] if e["event"] == "progress"]
    assert seg_done > 0 and cls_done and max(cls_done) > seg_done
    result = FinetuneResult.read(events[-1]["path"])
    assert events[-1]["path"] == str((tmp_path / "ft" / RESULT_FILE).resolve())
    assert result.to_json() == events[-1]["result"] and result.candidate.is_file()
    assert result.classifier_candidate is not None and result.classifier_candidate.is_file()
    assert events[-1]["result"]["candidate_gate"]["name"].startswith("tiny-cls-ft-")
    assert events[-1]["result"]["classifier_parent"]["name"] == "tiny-cls"


def test_no_classifier_and_the_text_summary(inputs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    seg, corr = inputs
    args = [str(seg), str(corr), "--out", str(tmp_path / "a"), *TINY]
    assert main([*args, "--classifier", str(_classifier(seg)), "--no-classifier"]) == 0
    text = capsys.readouterr().out
    assert "segmenter candidate" in text and "classifier candidate" not in text
    assert FinetuneResult.read(tmp_path / "a" / RESULT_FILE).classifier_candidate is None

    args = [str(seg), str(corr), "--out", str(tmp_path / "b"), *TINY]
    assert main([*args, "--classifier", str(_classifier(seg))]) == 0
    text = capsys.readouterr().out
    assert "classifier candidate" in text and "slice recall at the gate" in text and "ROC AUC" in text


def test_errors_are_one_json_line_with_the_exit_code(
    inputs: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    seg, _ = inputs
    (tmp_path / "none").mkdir()
    code = main([str(seg), str(tmp_path / "none"), "--out", str(tmp_path / "ft"), "--json"])
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 2 and line["event"] == "error" and line["exit_code"] == 2
    assert str(tmp_path / "none") in line["message"]


def test_terminate_cancels_and_leaves_nothing(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGTERM (what QProcess.terminate sends) stops the run at the next step; the folder is removed."""
    seg, corr = inputs
    out = tmp_path / "ft"
    proc = subprocess.Popen(
        _command(seg, corr, out, "--epochs", "50"), stdout=subprocess.PIPE, text=True, env=_env(), cwd=REPO
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["event"] == "progress":
            proc.send_signal(signal.SIGTERM)
            break
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=30) == 130
    assert rest[-1]["event"] == "cancelled" and "nothing was kept" in rest[-1]["message"]
    assert not out.exists()


def test_stdin_closing_cancels(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """With --stdin-control the run stops when its parent goes away (stdin closes)."""
    seg, corr = inputs
    out = tmp_path / "ft"
    proc = subprocess.Popen(
        _command(seg, corr, out, "--epochs", "50", "--stdin-control"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    assert proc.stdin is not None and proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["event"] == "progress":
            proc.stdin.close()
            break
    # the timeout only guards against a hang (a 50-epoch run would take far longer); how fast it
    # stops is not asserted here, a loaded machine makes any bound flaky
    assert proc.wait(timeout=120) == 130
    assert not out.exists()
