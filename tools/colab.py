"""What notebooks/colab.ipynb decides before each step, as functions the notebook calls and the tests check.

- `install_plan`: keep the PyTorch that is installed (Colab's, built for its CUDA driver) and say in one line what
  the install does; one outside the range pyproject.toml declares is kept too, since a PyTorch from PyPI might
  not match the machine's driver and would then see no GPU.
- `installed_from`: which checkout Python imports this project from, asked of a fresh Python started outside
  the repository (inside it, the working folder would shadow an install of another checkout).
- `gpu_problem`: a GPU that nvidia-smi lists but PyTorch does not see stops the notebook, instead of training the
  CPU recipes for hours.
- `next_step`: a re-run of the notebook continues: a fresh run where there is none, --resume where a run is
  unfinished, nothing where it has finished.

Imports nothing beyond the standard library: the notebook calls it before the project is installed.
"""
import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

KEPT = ("torch", "torchvision")  # the packages a machine's own build of is kept


def dependencies(pyproject):
    """The `dependencies` list of a pyproject.toml."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the TOML reader pip vendors
        from pip._vendor import tomli as tomllib
    return tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]


def declared_range(pyproject, package="torch"):
    """The version range pyproject.toml declares for `package`, e.g. '>=2.6,<3' ('' when it declares none)."""
    for requirement in dependencies(pyproject):
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        if name.lower() == package:
            return requirement[len(name):].split(";")[0].strip()
    return ""


def release(version):
    """'2.9.0+cu126' -> (2, 9, 0): the release numbers, local and pre-release tags left out."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0].split("rc")[0].split("a")[0])[:3])


def in_range(version, spec):
    """Whether `version` satisfies a range of >=, >, <=, <, == clauses separated by commas."""
    have = release(version)
    for clause in filter(None, (part.strip() for part in spec.split(","))):
        operator, bound = re.match(r"(>=|<=|==|>|<)\s*(.+)", clause).groups()
        want = release(bound)
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        if not {">=": a >= b, "<=": a <= b, "==": a == b, ">": a > b, "<": a < b}[operator]:
            return False
    return True


def installed_version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def install_plan(repo, torch_version=None):
    """(pip's arguments, the line that says what they do) to install the project at `repo`. `torch_version`: the
    installed PyTorch's (default: looked up; None when there is none)."""
    spec = declared_range(Path(repo) / "pyproject.toml")
    version = installed_version("torch") if torch_version is None else torch_version
    if version is None:
        return ["install", "-q", "-e", "."], f"no PyTorch installed: installing the project with PyTorch {spec}"
    if in_range(version, spec):
        return ["install", "-q", "-e", "."], (f"PyTorch {version} is in the declared range {spec}: kept; installing "
                                              "the project")
    others = [requirement for requirement in dependencies(Path(repo) / "pyproject.toml")
              if re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() not in KEPT]
    return ["install", "-q", *others, "--no-deps", "-e", "."], (
        f"PyTorch {version} is outside the declared range {spec}: kept all the same (a PyTorch from PyPI might not "
        "match this machine's CUDA driver); installing the project and its other dependencies around it")


def installed_from(python=sys.executable):
    """The checkout a fresh Python imports this project from (None: not installed), asked from outside any
    checkout, so the working folder cannot stand in for an install."""
    done = subprocess.run([python, "-c", "import common.files; print(common.files.REPO_ROOT)"], capture_output=True,
                          text=True, cwd=Path(sys.prefix).anchor or "/")
    return Path(done.stdout.strip()).resolve() if done.returncode == 0 else None


def gpus_listed():
    """The GPUs nvidia-smi lists ('GPU 0: Tesla T4 (UUID: ...)'); none where there is no nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return []
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if line.startswith("GPU ")] if done.returncode == 0 else []


def gpu_problem(listed, torch_sees):
    """One line when nvidia-smi lists a GPU that PyTorch does not see; None otherwise."""
    if listed and not torch_sees:
        return (f"nvidia-smi lists {listed[0].split(' (UUID')[0]} but PyTorch does not see it (a PyTorch without CUDA, "
                "or one built for another driver): training would run on the CPU for hours. Restart the runtime "
                "(Runtime > Restart session) and run all cells again; if it stays, reinstall Colab's PyTorch")
    return None


def next_step(results_dir, checkpoint_dir, epochs, prediction):
    """(flags, line) for a question's run in these folders: [] for a fresh run, ['--resume'] for one that has a
    checkpoint but has not finished `epochs` epochs (None: the recipe's) and written `prediction`, None when it has
    (nothing to do)."""
    results_dir, checkpoint_dir = Path(results_dir), Path(checkpoint_dir)
    if not any((checkpoint_dir / name).is_file() for name in ("last.pt", "best.pt")):
        return [], f"a fresh run: results in {results_dir}, checkpoints in {checkpoint_dir}"
    try:
        metrics = json.loads((results_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = {}
    done = isinstance(metrics, dict) and metrics.get("finished") is True and \
        isinstance(metrics.get("planned_epochs"), int) and (epochs is None or metrics["planned_epochs"] >= epochs)
    if done and (results_dir / prediction).is_file():
        return None, (f"finished: {results_dir} holds the run ({metrics['planned_epochs']} epochs) and {prediction}; "
                      "nothing to train (delete its folders, or run the script with --overwrite, to train afresh)")
    return ["--resume"], f"continuing the run in {checkpoint_dir} (--resume)"
