"""The notebooks (notebooks/*.ipynb) run top to bottom as stored (tiny random checkpoints), in a
real Jupyter kernel through nbclient; any error fails. They are stored without outputs."""
from __future__ import annotations

import json
import os

import pytest

from tests.helpers import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_both_notebooks_are_there_without_outputs():
    assert [p.name for p in NOTEBOOKS] == ["segmentation.ipynb", "semantic_coherence.ipynb"]
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), path
        assert 'MODEL = "tiny"  # or "segmind/SSD-1B"' in "".join(cells[1]["source"])


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend: figures as PNG
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError with the cell and its traceback
    images = sum(1 for c in nb.cells for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    assert images >= 2, f"{path.name}: {images} figures"
    nbformat.write(nb, tmp_path / path.name)  # the executed copy, for a look
