"""What the Colab notebook decides before each step (tools/colab.py): the install that keeps Colab's PyTorch, which
checkout is installed, a GPU PyTorch does not see, and whether a re-run starts, continues or leaves a run."""
import json

import pytest

from tests.helpers import REPO
from tools import colab


@pytest.mark.parametrize("version, spec, inside", [
    ("2.9.0+cu126", ">=2.6,<3", True),
    ("2.6.0", ">=2.6,<3", True),
    ("2.5.1+cu121", ">=2.6,<3", False),
    ("3.0.0", ">=2.6,<3", False),
    ("2.10.0.dev20260101+cu128", ">=2.6,<3", True),
    ("2.8.0", ">2.8", False),
    ("2.8.1", "==2.8.1", True),
])
def test_a_version_is_compared_with_a_range_clause_by_clause(version, spec, inside):
    assert colab.in_range(version, spec) is inside


def test_the_declared_range_is_pyproject_tomls(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["numpy", "torch>=2.6,<3", '
                                             '"torchvision>=0.21,<1"]\n')
    assert colab.declared_range(tmp_path / "pyproject.toml") == ">=2.6,<3"
    assert colab.declared_range(tmp_path / "pyproject.toml", "torchvision") == ">=0.21,<1"
    assert colab.declared_range(REPO / "pyproject.toml").startswith(">=2.")


def test_the_install_keeps_a_pytorch_in_range_and_one_outside_it(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["numpy", "torch>=2.6,<3", '
                                             '"torchvision>=0.21,<1", "tqdm"]\n')
    arguments, line = colab.install_plan(tmp_path, "2.9.0+cu126")
    assert arguments == ["install", "-q", "-e", "."]
    assert line == "PyTorch 2.9.0+cu126 is in the declared range >=2.6,<3: kept; installing the project"
    arguments, line = colab.install_plan(tmp_path, "2.5.1+cu121")
    assert arguments == ["install", "-q", "numpy", "tqdm", "--no-deps", "-e", "."]  # no torch, no torchvision
    assert line.startswith("PyTorch 2.5.1+cu121 is outside the declared range >=2.6,<3: kept all the same")
    assert "\n" not in line


def test_the_installed_checkout_is_asked_outside_the_working_folder(tmp_path, monkeypatch):
    """A copy of the repository as the working folder (its common/ importable from there) does not pass for the
    installed checkout: the notebook in that copy would otherwise skip its install and run another checkout."""
    copy = tmp_path / "copy"
    (copy / "common").mkdir(parents=True)
    (copy / "common" / "__init__.py").write_text("")
    (copy / "common" / "files.py").write_text(f"REPO_ROOT = {str(copy)!r}\n")
    monkeypatch.chdir(copy)
    assert colab.installed_from() == REPO.resolve()  # the tests' PYTHONPATH: this checkout


def test_a_gpu_that_pytorch_does_not_see_stops_the_notebook():
    listed = ["GPU 0: Tesla T4 (UUID: GPU-0f1e2d3c)"]
    line = colab.gpu_problem(listed, torch_sees=False)
    assert line.startswith("nvidia-smi lists GPU 0: Tesla T4 but PyTorch does not see it") and "\n" not in line
    assert colab.gpu_problem(listed, torch_sees=True) is None
    assert colab.gpu_problem([], torch_sees=False) is None  # no GPU at all: the CPU recipes, as asked


def test_a_rerun_starts_continues_or_leaves_each_run(tmp_path):
    out, ckpt, prediction = tmp_path / "results", tmp_path / "checkpoints", "Q1_label_predictions.npy"
    flags, line = colab.next_step(out, ckpt, 45, prediction)
    assert flags == [] and line.startswith("a fresh run")
    ckpt.mkdir()
    (ckpt / "last.pt").write_bytes(b"checkpoint")
    assert colab.next_step(out, ckpt, 45, prediction)[0] == ["--resume"]  # stopped before its outputs
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"finished": False, "planned_epochs": 45}))
    (out / prediction).write_bytes(b"npy")
    assert colab.next_step(out, ckpt, 45, prediction)[0] == ["--resume"]  # an unfinished run's predictions
    (out / "metrics.json").write_text(json.dumps({"finished": True, "planned_epochs": 45}))
    flags, line = colab.next_step(out, ckpt, 45, prediction)
    assert flags is None and line.startswith(f"finished: {out} holds the run (45 epochs)")
    assert colab.next_step(out, ckpt, None, prediction)[0] is None  # the recipe's epochs: any finished run
    assert colab.next_step(out, ckpt, 60, prediction)[0] == ["--resume"]  # more epochs asked for: continue
    (ckpt / "last.pt").unlink()
    (ckpt / "best.pt").write_bytes(b"checkpoint")
    assert colab.next_step(out, ckpt, 45, prediction)[0] is None
    (out / "metrics.json").write_text("{not json")
    assert colab.next_step(out, ckpt, 45, prediction)[0] == ["--resume"]
