"""notebooks/colab.ipynb runs top to bottom outside Colab (its Drive cell skipped), in quick mode on the CPU,
and both prediction files it writes pass the checker."""
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_the_colab_notebook_runs_top_to_bottom_in_quick_mode(tmp_path, course_data, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("CS543_QUICK", "1")
    monkeypatch.setenv("CS543_WORK", str(tmp_path))
    monkeypatch.setenv("CS543_DATA", str(course_data))  # prepare_data from the course folder, as a student would
    if (REPO / "data" / "classes.txt").is_file():
        monkeypatch.delenv("CS543_DATA")  # data/ is prepared already: the notebook uses it, and leaves it alone
    notebook = nbformat.read(REPO / "notebooks" / "colab.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    results = tmp_path / "results"
    q1 = results / "q1_fashion" / "improved" / "Q1_label_predictions.npy"
    q2 = next((results / "q2_segmentation").glob("*/Q2_sseg_predictions.npy"))
    for path in (q1, q2):  # checked again here, in a process of the test's own
        done = subprocess.run([sys.executable, "-m", "tools.check_submission", str(path)], cwd=REPO,
                              capture_output=True, text=True, env=os.environ)
        assert done.returncode == 0 and done.stdout.startswith("OK "), done.stdout + done.stderr
    assert (results / "report.pdf").read_bytes().startswith(b"%PDF")
    output = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []))
    assert "epoch   1/1" in output and f"hand in: {q1}" in output
