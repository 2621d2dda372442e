"""CaMU.ipynb runs top to bottom on a small MNIST slice on the CPU, plots, and forgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "CaMU.ipynb"


def small_parameters(out_dir: Path, data_root: Path) -> str:
    return "\n".join([
        'DATASET = "mnist"',
        'SCENARIO = "class"',
        f"DATA_ROOT = {str(data_root)!r}",
        "DOWNLOAD = False",
        "TRAIN_LIMIT = 2000",
        "TEST_LIMIT = 600",
        "TRAIN_EPOCHS = 1",
        "UNLEARN_EPOCHS = 2",
        "SEED = 0",
        'DEVICE = "cpu"',
        "NUM_THREADS = 2",
        f"OUT_DIR = {str(out_dir)!r}",
    ])


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_notebook_runs_and_unlearns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel must use its inline backend to emit PNGs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    params[0].source = small_parameters(tmp_path / "runs", data_root)
    nb.cells.append(nbformat.v4.new_code_cell("import json\nprint(json.dumps(metrics))"))

    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    pngs = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(pngs) >= 2, "expected the counterfactual grid and the loss curves as PNG outputs"

    printed = "".join(out.text for out in nb.cells[-1].outputs if out.output_type == "stream" and out.name == "stdout")
    metrics = json.loads(printed.strip().splitlines()[-1])
    assert metrics["forget_acc"] < 20, metrics
    assert metrics["remain_acc"] > 80, metrics
    assert 0 <= metrics["mia"] <= 1, metrics
    assert (tmp_path / "runs" / "checkpoints").is_dir()  # the original model was cached under OUT_DIR
