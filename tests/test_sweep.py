"""bench/sweep.py: real train.py trials into one shared Optuna storage (needs the [sweep] extra)."""
import subprocess
import sys

import pytest

from tests.helpers import REPO

TINY = ["--epochs", "1", "--limit", "500", "--width", "4", "--no-tta", "--force"]


@pytest.mark.slow
def test_a_two_trial_sweep_writes_a_study_that_a_second_process_adds_to(tmp_path):
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"

    def sweep(trials):
        done = subprocess.run([sys.executable, "bench/sweep.py", "q1", "--trials", str(trials), "--storage", storage,
                               "--study", "tiny", *TINY], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    assert "study tiny" in sweep(2)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert len(trials) == 2 and all(t.state in finished for t in trials)
    assert all(0 <= t.value <= 100 for t in trials if t.value is not None)  # holdout accuracy, %
    sweep(1)  # another process, the same storage: the study grows
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert len(trials) == 3 and all(t.state in finished for t in trials)
