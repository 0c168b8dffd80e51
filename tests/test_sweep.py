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
    # the first trial is the default recipe, so the study compares every draw with it
    assert trials[0].params == {"lr": 0.1, "weight_decay": 5e-4, "label_smoothing": 0.1, "ema_decay": 0.995,
                                "dropout": 0.2}
    assert trials[1].params != trials[0].params
    sweep(1)  # another process, the same storage: the study grows
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert len(trials) == 3 and all(t.state in finished for t in trials)
    assert trials[2].params != trials[0].params  # the default ran once, not once a process


@pytest.mark.parametrize("question", ["q1", "q2", "q1-arch"])
def test_the_search_space_holds_the_default_recipe(question):
    """The study's first trial is the default recipe (its figure is what a winner must beat), so each lever's
    range must hold the default's value, and the value must be the recipe's."""
    from bench import sweep
    defaults = sweep.recipe_defaults(question)
    for name, (kind, *bounds) in sweep.SPACES[question]["levers"].items():
        if kind == "choice":
            assert defaults[name] in bounds[0], name
        else:
            assert bounds[0] <= defaults[name] <= bounds[1], name


def test_trials_are_pruned_only_from_a_third_of_their_epochs_on():
    """Early figures of a short one-cycle run say little about its end: the pruner waits a third of the epochs
    the trials run (the recipe's, or --epochs passed through to train.py), then stops a trial below the median."""
    optuna = pytest.importorskip("optuna")
    from bench import sweep

    def first_pruned_epoch(extra, epochs):
        study = optuna.create_study(direction="maximize", pruner=sweep.make_pruner(sweep.SPACES["q1"], extra))
        for _ in range(3):  # three finished trials at 90 % every epoch
            study.add_trial(optuna.trial.create_trial(value=90.0, intermediate_values=dict.fromkeys(
                range(1, epochs + 1), 90.0), distributions={}, params={}))
        trial = study.ask()
        for epoch in range(1, epochs + 1):  # a trial far below them from its first epoch
            trial.report(10.0, epoch)
            if trial.should_prune():
                return epoch

    assert first_pruned_epoch([], 15) == 15 // 3  # Q1's recipe: 15 epochs
    assert first_pruned_epoch(["--limit", "500", "--epochs", "30"], 30) == 10
    assert first_pruned_epoch(["--epochs=2"], 2) == 1


def test_a_trial_tunes_on_the_holdout_never_val_with_its_share_of_the_threads(monkeypatch, tmp_path):
    """Sweep docstring: trials tune on --holdout (never val), each worker's run with cores/N threads; a trial's
    figure is the best validated epoch its history.jsonl recorded."""
    optuna = pytest.importorskip("optuna")
    import json

    from bench import sweep

    seen = {}

    class FakeProcess:
        def __init__(self, command, cwd, stdout, stderr, env):
            seen.update(command=command, threads=env["OMP_NUM_THREADS"])
            out = command[command.index("--out-dir") + 1]
            __import__("os").makedirs(out)
            records = [{"epoch": 1, "train_loss": 1.0, "val_accuracy": 80.0},
                       {"epoch": 2, "train_loss": 0.9, "val_accuracy": 85.5}]
            (__import__("pathlib").Path(out) / "history.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in records))

        def poll(self):
            return 0

        def wait(self):
            return 0

        returncode = 0

    monkeypatch.setattr(sweep.subprocess, "Popen", FakeProcess)
    study = optuna.create_study(direction="maximize")
    value = sweep.run_trial(study.ask(), sweep.SPACES["q1"], ["--epochs", "2"], threads=1)
    command = seen["command"]
    assert value == 85.5 and seen["threads"] == "1"
    assert command[command.index("--holdout") + 1] == str(sweep.SPACES["q1"]["holdout"])
    assert "--final" not in command and "--eval-only" not in command


def test_an_equal_time_trial_trains_the_epochs_that_fit_its_budget_and_records_its_time(monkeypatch):
    """Sweep docstring, q1-arch: a trial's epochs are those that fit the budget at its measured seconds per
    epoch; its whole run's seconds are recorded, and a run over the budget is infeasible, never the winner."""
    optuna = pytest.importorskip("optuna")
    import json

    from bench import sweep

    assert sweep.epochs_within(420, 25, 13.0) == 30  # 395 / 13 = 30.4
    assert sweep.epochs_within(420, 25, 500.0) == 1  # at least one epoch
    seen = {}

    class FakeProcess:
        def __init__(self, command, cwd, stdout, stderr, env):
            seen["command"] = command
            out = __import__("pathlib").Path(command[command.index("--out-dir") + 1])
            out.mkdir(parents=True)
            (out / "history.jsonl").write_text(json.dumps({"epoch": 1, "val_accuracy": 91.0}) + "\n")

        def poll(self):
            return 0

        def wait(self):
            return 0

        returncode = 0

    measured = []
    monkeypatch.setattr(sweep, "epoch_seconds", lambda space, flags: measured.append(flags) or 10.0)
    monkeypatch.setattr(sweep.subprocess, "Popen", FakeProcess)
    space = sweep.SPACES["q1-arch"]
    study = optuna.create_study(direction="maximize", pruner=sweep.make_pruner(space, []))
    assert isinstance(study.pruner, optuna.pruners.NopPruner)  # epochs differ: figures at one epoch do not compare
    trial = study.ask({"width": optuna.distributions.IntDistribution(16, 64, step=8),
                       "depth": optuna.distributions.IntDistribution(1, 3),
                       "residual": optuna.distributions.CategoricalDistribution([False, True]),
                       "batch_size": optuna.distributions.CategoricalDistribution([128, 256, 512])})
    assert sweep.run_trial(trial, space, [], threads=2) == 91.0
    command, flags = seen["command"], measured[0]
    epochs = int((420 - space["overhead"]) // (10 * space["sustained"]))
    assert command[command.index("--epochs") + 1] == str(epochs)
    assert flags[flags.index("--width") + 1] == str(trial.params["width"])  # the network timed is the one trained
    assert ("--residual" in flags) == trial.params["residual"]
    assert trial.user_attrs["epochs"] == epochs and trial.user_attrs["seconds"] >= 0
    study.tell(trial, 91.0)  # the fake run took no time: feasible, 420 s under its budget
    # the attribute is the run's seconds to a tenth, the constraint the exact seconds over the budget
    assert study.trials[0].constraints["seconds_over_budget"] == pytest.approx(trial.user_attrs["seconds"] - 420,
                                                                               abs=0.05)

    class Timed:
        def __init__(self, seconds):
            self.user_attrs = {"seconds": seconds} if seconds is not None else {}

    assert sweep.feasible(Timed(420), space) and not sweep.feasible(Timed(421), space)
    assert not sweep.feasible(Timed(None), space)  # a run that recorded no time
    assert sweep.feasible(Timed(10_000), sweep.SPACES["q1"])  # no budget: every trial counts


@pytest.mark.parametrize("argv, message", [
    (["q1-arch", "--workers", "2"], "one trial at a time"),
    (["q1-arch", "--epochs", "10"], "drop --epochs"),
    (["q1", "--budget", "100"], "--budget applies to the equal-time space"),
])
def test_equal_time_flags_are_checked(argv, message, monkeypatch, capsys):
    from bench import sweep
    monkeypatch.setattr(sys, "argv", ["bench/sweep.py", *argv])
    with pytest.raises(SystemExit) as stopped:
        sweep.main()
    assert stopped.value.code == 2 and message in capsys.readouterr().err
