"""notebooks/colab.ipynb runs top to bottom outside Colab (its Drive cell skipped), in quick mode on the CPU, and
both prediction files it writes pass the checker; run again into the same folders, it neither fails nor trains a
finished run again."""
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


def execute(nbformat, nbclient):
    notebook = nbformat.read(REPO / "notebooks" / "colab.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    return "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []))


@pytest.mark.slow
def test_the_colab_notebook_runs_top_to_bottom_in_quick_mode_and_again(tmp_path, course_data, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("CS543_QUICK", "1")
    monkeypatch.setenv("CS543_WORK", str(tmp_path))
    monkeypatch.setenv("CS543_DATA", str(course_data))  # prepare_data from the course folder, as a student would
    if (REPO / "data" / "classes.txt").is_file():
        monkeypatch.delenv("CS543_DATA")  # data/ is prepared already: the notebook uses it, and leaves it alone
    output = execute(nbformat, nbclient)
    results = tmp_path / "results"
    q1 = results / "q1_fashion" / "improved" / "Q1_label_predictions.npy"
    q2 = results / "q2_segmentation" / "improved" / "Q2_sseg_predictions.npy"
    for path in (q1, q2):  # checked again here, in a process of the test's own
        done = subprocess.run([sys.executable, "-m", "tools.check_submission", str(path)], cwd=REPO,
                              capture_output=True, text=True, env=os.environ)
        assert done.returncode == 0 and done.stdout.startswith("OK "), done.stdout + done.stderr
    assert (results / "report.pdf").read_bytes().startswith(b"%PDF")
    assert "q1_fashion: a fresh run" in output and output.count("epoch   1/1") == 2 and f"hand in: {q1}" in output
    assert f"the project is installed from {REPO}" in output  # the test's PYTHONPATH: this checkout
    written = {path: path.stat().st_mtime_ns for path in (q1, q2)}

    again = execute(nbformat, nbclient)  # "Run all" a second time, in the same folders
    assert f"q1_fashion: finished: {q1.parent} holds the run (1 epochs)" in again
    assert f"q2_segmentation: finished: {q2.parent} holds the run (1 epochs)" in again
    assert "epoch   1/1" not in again and f"hand in: {q2}" in again
    assert {path: path.stat().st_mtime_ns for path in (q1, q2)} == written  # nothing trained or predicted again
