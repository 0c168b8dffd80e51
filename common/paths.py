"""The default folders, resolved against the repository root so the scripts run from any directory.

A path the user types on the command line keeps its usual meaning (relative to where they stand);
only the defaults are anchored here.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
RESULTS_DIR = REPO_ROOT / "results"
CHECKPOINTS_DIR = REPO_ROOT / "checkpoints"


def shown(path):
    """`path` relative to the current directory when it lies below it (shorter messages), else as is."""
    try:
        return Path(path).resolve().relative_to(Path.cwd())
    except ValueError:
        return Path(path)


def repo_relative(path):
    """`path` relative to the repository when it lies inside it, else as is: what a hand-in document shows
    (it carries no machine's absolute paths)."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT)
    except ValueError:
        return Path(path)
