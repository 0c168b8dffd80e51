"""Search a recipe's levers with Optuna: each trial a real `train.py` run, pruned on its per-epoch figure.

Honest by construction: trials tune on a holdout the final check never sees (`--holdout`: the last 5,000
of Q1's 55,000 training images, the last 100 of Q2's 700), never on val. Confirm the winner on the real
val split over 3 seeds (bench/q1_time_to_accuracy.py, bench/q2_accuracy.py) before it becomes a default.

The study lives in one SQLite file by default; `--storage URL` takes any database Optuna supports, so
several machines can work on one study (the way past one machine). `--workers N` runs N trials at once in
processes that share the storage, each with cores/N threads: two PyTorch processes with default threads on
2 cores made a 6 s epoch take 60-123 s. Needs the optional extra: `pip install -e ".[sweep]"`.

    python bench/sweep.py q1 --trials 20
    python bench/sweep.py q2 --trials 12 --storage sqlite:///q2.db --study q2-levers
    python bench/sweep.py q1 --trials 2 --epochs 1 --limit 2000      # a quick look at the machinery
"""
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.timing import bench_parser, follow, refuse_if_busy
from common.cli import as_words
from common.paths import REPO_ROOT
from common.run import requested
from q1_fashion import train as q1_train
from q2_segmentation import train as q2_train

# The recipe's own levers (the flags of train.py) and the ranges searched around each default.
SPACES = {
    "q1": {
        "script": "q1_fashion/train.py", "holdout": 5000, "key": "val_accuracy",
        "levers": {
            "lr": ("log", 0.03, 0.3),
            "weight_decay": ("log", 1e-4, 2e-3),
            "label_smoothing": ("float", 0.0, 0.2),
            "ema_decay": ("choice", [0.99, 0.995, 0.998]),
            "dropout": ("float", 0.0, 0.4),
        },
    },
    "q2": {
        "script": "q2_segmentation/train.py", "holdout": 100, "key": "val_mIoU",
        "levers": {
            "lr": ("log", 3e-4, 3e-3),
            "trunk_lr_scale": ("float", 0.1, 1.0),
            "loss_weight": ("float", 0.25, 2.0),
            "max_scale": ("float", 1.0, 2.0),
            "min_scale": ("float", 0.5, 1.0),
            "color": ("float", 0.0, 0.4),
            "ema_decay": ("choice", [0.98, 0.99, 0.995]),
            "frozen_bn": ("choice", ["fixed", "moving"]),
        },
    },
}
SCRIPTS = {"q1": q1_train, "q2": q2_train}
QUESTIONS = {question: script.QUESTION for question, script in SCRIPTS.items()}


def suggest(trial, levers):
    """Flags for train.py from the trial's draw of each lever."""
    flags = []
    for name, (kind, *bounds) in levers.items():
        if kind == "log":
            value = trial.suggest_float(name, *bounds, log=True)
        elif kind == "float":
            value = trial.suggest_float(name, *bounds)
        else:
            value = trial.suggest_categorical(name, bounds[0])
        flags += as_words(name, value if isinstance(value, str) else f"{value:.6g}")
    return flags


def default_recipe(question):
    """The recipe a plain `train.py` of the question runs."""
    return QUESTIONS[question].recipes[QUESTIONS[question].default_model]


def recipe_defaults(question):
    """Each lever's value in the default recipe. A study's first trial runs them, so the study measures the
    default on the same holdout as every other trial: a winner is a winner over the default."""
    return {name: default_recipe(question)[name] for name in SPACES[question]["levers"]}


def make_pruner(question, extra):
    """The median pruner: it stops a trial whose figure falls below the median of the others at the same epoch,
    but only from a third of the run's epochs on. Earlier figures of a short one-cycle run with a weight
    average say little about its end: pruning from epoch 1, this sweep's first Q1 study stopped 8 of 14
    trials at epochs 1-3, ranking them by how fast the average warmed up."""
    import optuna

    # the epochs the trials' command line trains: train.py's own flags and recipes, resolved as train.py does
    epochs = requested(SCRIPTS[question].parse_args(extra), QUESTIONS[question])[1]["epochs"]
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 3))


def run_trial(trial, space, extra, threads):
    """One train.py run in scratch folders; reports each validated epoch to Optuna (and prints it: a Q2 trial
    runs for a quarter of an hour) and stops the run when the pruner says so. Returns the figure of the
    checkpoint behind the prediction file (holdout)."""
    import optuna

    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, space["script"], *suggest(trial, space["levers"]), "--holdout",
                   str(space["holdout"]), *extra, "--out-dir", f"{scratch}/out", "--checkpoint-dir", f"{scratch}/c"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        with open(Path(scratch) / "output.txt", "w") as output:
            process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT, env=env)
        best = None
        for record in follow(process, Path(scratch) / "out" / "history.jsonl"):
            if space["key"] in record:
                value = record[space["key"]]
                best = value if best is None else max(best, value)
                trial.report(value, record["epoch"])
                print(f"trial {trial.number}: epoch {record['epoch']}, {space['key']} {value}", flush=True)
                if trial.should_prune():
                    process.kill()
                    process.wait()
                    raise optuna.TrialPruned()
        if process.wait() != 0 or best is None:
            tail = (Path(scratch) / "output.txt").read_text().strip().splitlines()[-1:]
            raise RuntimeError(f"train.py failed (exit {process.returncode}): {' '.join(command)}: {tail}")
        return best


def work(question, trials, storage, study_name, extra, threads):
    """A worker: `trials` trials of the shared study (several workers may run at once)."""
    import optuna

    # the pruner is not stored with the study: each process that runs trials names its own
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(question, extra))
    study.optimize(lambda trial: run_trial(trial, SPACES[question], extra, threads), n_trials=trials,
                   catch=(RuntimeError,))


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("question", choices=SPACES)
    parser.add_argument("--trials", type=int, default=10, help="trials in all, over every worker")
    parser.add_argument("--workers", type=int, default=1, help="trials at once, each with cores/N threads")
    parser.add_argument("--storage", help="an Optuna storage URL (default: sqlite:///results/sweep-<q>.db)")
    parser.add_argument("--study", help="the study's name (default: <question>-levers)")
    args, extra = parser.parse_known_args()  # the rest goes to every train.py, e.g. --epochs 10
    try:
        import optuna
    except ImportError:
        raise SystemExit('error: bench/sweep.py needs Optuna: pip install -e ".[sweep]"') from None
    refuse_if_busy(args.force)
    storage = args.storage or f"sqlite:///{REPO_ROOT / 'results' / f'sweep-{args.question}.db'}"
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    name = args.study or f"{args.question}-levers"
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    study.enqueue_trial(recipe_defaults(args.question), skip_if_exists=True)  # the default first, once a study
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    shares = [args.trials // args.workers + (i < args.trials % args.workers) for i in range(args.workers)]
    with ProcessPoolExecutor(args.workers) as pool:
        for future in [pool.submit(work, args.question, n, storage, name, extra, threads) for n in shares if n]:
            future.result()
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    print(f"study {name} in {storage}: {len(study.trials)} trials, {len(done)} complete, "
          f"{sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)} pruned")
    for trial in sorted(done, key=lambda t: -t.value)[:5]:
        print(f"  {trial.value:.4f} (holdout {SPACES[args.question]['key']}): " +
              " ".join(" ".join(as_words(k, f"{v:.4g}" if isinstance(v, float) else v))
                       for k, v in trial.params.items()))


if __name__ == "__main__":
    main()
