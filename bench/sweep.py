"""Search a recipe's levers with Optuna: each trial a real `train.py` run, pruned on its per-epoch figure.

Honest by construction: trials tune on a holdout the final check never sees (`--holdout`: the last 5,000
of Q1's 55,000 training images, the last 100 of Q2's 700), never on val. Confirm the winner on the real
val split over 3 seeds (bench/q1_time_to_accuracy.py, bench/q2_accuracy.py) before it becomes a default.

The study lives in one SQLite file by default; `--storage URL` takes any database Optuna supports, so
several machines can work on one study (the way past one machine). `--workers N` runs N trials at once in
processes that share the storage, each with cores/N threads: two PyTorch processes with default threads on
2 cores made a 6 s epoch take 60-123 s. Needs the optional extra: `pip install -e ".[sweep]"`.

`q1-arch` searches Q1's network (channels, convolutions per stage, residual shortcuts, batch size) at equal
time, not at equal epochs: before each trial its network's seconds per epoch are measured here (an epoch over
8,192 images after a warm-up one, scaled to the 50,000 a holdout run trains on, plus a validation, times the
slowdown of a long run measured on the default), and the trial trains the epochs that fit `--budget` seconds
of a whole run on this machine. A trial whose run took
longer than the budget is infeasible (an Optuna constraint), never the winner; such trials are not pruned
(their epochs differ, so their figures at one epoch do not compare), and they run one at a time.

    python bench/sweep.py q1 --trials 20
    python bench/sweep.py q2 --trials 12 --storage sqlite:///q2.db --study q2-levers
    python bench/sweep.py q1-arch --trials 8 --budget 420
    python bench/sweep.py q1 --trials 2 --epochs 1 --limit 2000      # a quick look at the machinery
"""
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.timing import bench_parser, follow, refuse_if_busy, training
from common.files import REPO_ROOT
from common.settings import as_words, requested
from q1_fashion import train as q1_train
from q1_fashion.data import NUM_TRAIN
from q2_segmentation import train as q2_train

# The recipe's own levers (the flags of train.py) and the ranges searched around each default.
SPACES = {
    "q1": {
        "question": "q1", "script": "q1_fashion/train.py", "holdout": 5000, "key": "val_accuracy",
        "levers": {
            "lr": ("log", 0.03, 0.3),
            "weight_decay": ("log", 1e-4, 2e-3),
            "label_smoothing": ("float", 0.0, 0.2),
            "ema_decay": ("choice", [0.99, 0.995, 0.998]),
            "dropout": ("float", 0.0, 0.4),
        },
    },
    "q2": {
        "question": "q2", "script": "q2_segmentation/train.py", "holdout": 100, "key": "val_mIoU",
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
    "q1-arch": {
        "question": "q1", "script": "q1_fashion/train.py", "holdout": 5000, "key": "val_accuracy",
        "budget": 420,          # seconds a whole run may take: the default's budget on the slowest machine
        # start-up, data, the final 10-view predictions and the figures: a default run's time less its epochs'
        # (13 s on an AVX-512 EPYC), with a margin
        "overhead": 20,
        # a whole run's epochs are slower than the short calibration's: on a 2-core AVX-512 EPYC the default
        # network's calibration said 8.5 s, its 4-epoch run took 9.3 s an epoch and its 15-epoch run 11.0
        # (scaled to 50,000 images): the CPU slows under sustained load
        "sustained": 1.3,
        "levers": {
            "width": ("int", 16, 64, 8),
            "depth": ("int", 1, 3),
            "residual": ("choice", [False, True]),
            "batch_size": ("choice", [128, 256, 512]),
        },
    },
}
CALIBRATION_IMAGES = 8192  # the epoch timed before a q1-arch trial: 32 batches of 256
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
        elif kind == "int":
            value = trial.suggest_int(name, *bounds[:2], step=bounds[2] if len(bounds) > 2 else 1)
        else:
            value = trial.suggest_categorical(name, bounds[0])
        flags += as_words(name, f"{value:.6g}" if isinstance(value, float) else value)
    return flags


def default_recipe(question):
    """The recipe a plain `train.py` of the question runs."""
    return QUESTIONS[question].recipes[QUESTIONS[question].default_model]


def recipe_defaults(name):
    """Each lever's value in the default recipe. A study's first trial runs them, so the study measures the
    default on the same holdout as every other trial: a winner is a winner over the default."""
    return {lever: default_recipe(SPACES[name]["question"])[lever] for lever in SPACES[name]["levers"]}


def make_pruner(space, extra):
    """The median pruner: it stops a trial whose figure falls below the median of the others at the same epoch,
    but only from a third of the run's epochs on. Earlier figures of a short one-cycle run with a weight
    average say little about its end: pruning from epoch 1, this sweep's first Q1 study stopped 8 of 14
    trials at epochs 1-3, ranking them by how fast the average warmed up. Equal-time trials are not pruned."""
    import optuna

    if "budget" in space:
        return optuna.pruners.NopPruner()
    question = space["question"]
    # the epochs the trials' command line trains: train.py's own flags and recipes, resolved as train.py does
    epochs = requested(SCRIPTS[question].parse_args(extra), QUESTIONS[question])[1]["epochs"]
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 3))


def epochs_within(budget, overhead, epoch_seconds):
    """The epochs whose run fits `budget` seconds: (budget - overhead) // epoch_seconds, at least 1."""
    return max(1, math.floor((budget - overhead) / epoch_seconds))


def epoch_seconds(space, flags):
    """Seconds of one training epoch and one validation of `train.py FLAGS` on this machine: an epoch over
    CALIBRATION_IMAGES training images, timed after a first untimed one (kernels and caches warm), scaled to
    the images a holdout run trains on, plus one validation of the holdout, timed."""
    bench = training(SCRIPTS[space["question"]], [
        *flags, "--holdout", str(space["holdout"]), "--limit", str(CALIBRATION_IMAGES)])
    bench.epoch(1)
    began = time.perf_counter()
    bench.epoch(2)
    seconds = (time.perf_counter() - began) * (NUM_TRAIN - space["holdout"]) / CALIBRATION_IMAGES
    began = time.perf_counter()
    bench.validate()
    return seconds + time.perf_counter() - began


def run_trial(trial, space, extra, threads):
    """One train.py run in scratch folders; reports each validated epoch to Optuna (and prints it: a Q2 trial
    runs for a quarter of an hour) and stops the run when the pruner says so. Returns the figure of the
    checkpoint behind the prediction file (holdout). An equal-time space's trial first gets the epochs that
    fit the budget (user attributes: epochs, seconds per epoch measured, seconds the whole run took)."""
    import optuna

    flags = suggest(trial, space["levers"])
    if "budget" in space:
        per_epoch = epoch_seconds(space, flags)
        epochs = epochs_within(space["budget"], space["overhead"], per_epoch * space["sustained"])
        trial.set_user_attr("epoch_seconds", round(per_epoch, 1))
        trial.set_user_attr("epochs", epochs)
        flags += ["--epochs", str(epochs)]
        print(f"trial {trial.number}: {' '.join(flags)} ({per_epoch:.1f} s an epoch measured)", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, space["script"], *flags, "--holdout",
                   str(space["holdout"]), *extra, "--out-dir", f"{scratch}/out", "--checkpoint-dir", f"{scratch}/c"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        began = time.perf_counter()
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
        seconds = time.perf_counter() - began
        trial.set_user_attr("seconds", round(seconds, 1))
        if "budget" in space:  # feasible at 0 or less: Optuna's samplers draw away from infeasible trials
            trial.set_constraint("seconds_over_budget", seconds - space["budget"])
        return best


def feasible(trial, space):
    """Whether a finished trial counts: any trial of a space without a budget; of an equal-time space, one
    whose whole run took no longer than the budget."""
    return "budget" not in space or trial.user_attrs.get("seconds", math.inf) <= space["budget"]


def work(space, trials, storage, study_name, extra, threads):
    """A worker: `trials` trials of the shared study (several workers may run at once)."""
    import optuna

    # the pruner is not stored with the study: each process that runs trials names its own
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(space, extra))
    study.optimize(lambda trial: run_trial(trial, space, extra, threads), n_trials=trials, catch=(RuntimeError,))


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("space", choices=SPACES,
                        help="q1, q2: the recipe's levers at the recipe's epochs; q1-arch: Q1's network at equal time")
    parser.add_argument("--trials", type=int, default=10, help="trials in all, over every worker")
    parser.add_argument("--workers", type=int, default=1, help="trials at once, each with cores/N threads")
    parser.add_argument("--budget", type=float,
                        help=f"q1-arch: seconds a trial's whole run may take (default {SPACES['q1-arch']['budget']})")
    parser.add_argument("--storage", help="an Optuna storage URL (default: sqlite:///results/sweep-<space>.db)")
    parser.add_argument("--study", help="the study's name (default: <space>-levers)")
    args, extra = parser.parse_known_args()  # the rest goes to every train.py, e.g. --epochs 10
    space = dict(SPACES[args.space])
    if "budget" in space:
        if args.workers != 1:
            parser.error(f"{args.space} times each network before its trial: one trial at a time (--workers 1)")
        if any(word.split("=")[0] == "--epochs" for word in extra):
            parser.error(f"{args.space} gives each trial the epochs that fit --budget: drop --epochs")
        space["budget"] = args.budget or space["budget"]
    elif args.budget:
        parser.error(f"--budget applies to the equal-time space q1-arch, not {args.space}")
    try:
        import optuna
    except ImportError:
        raise SystemExit('error: bench/sweep.py needs Optuna: pip install -e ".[sweep]"') from None
    refuse_if_busy(args.force)
    storage = args.storage or f"sqlite:///{REPO_ROOT / 'results' / f'sweep-{args.space}.db'}"
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    name = args.study or f"{args.space}-levers"
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    study.enqueue_trial(recipe_defaults(args.space), skip_if_exists=True)  # the default first, once a study
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    shares = [args.trials // args.workers + (i < args.trials % args.workers) for i in range(args.workers)]
    with ProcessPoolExecutor(args.workers) as pool:
        for future in [pool.submit(work, space, n, storage, name, extra, threads) for n in shares if n]:
            future.result()
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    print(f"study {name} in {storage}: {len(study.trials)} trials, {len(done)} complete, "
          f"{sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)} pruned"
          + (f", {sum(not feasible(t, space) for t in done)} over the {space['budget']:g} s budget"
             if "budget" in space else ""))
    for trial in sorted(done, key=lambda t: (feasible(t, space), t.value), reverse=True)[:5]:
        timing = (f"; {trial.user_attrs.get('epochs')} epochs, {trial.user_attrs.get('seconds')} s"
                  f"{'' if feasible(trial, space) else ' (over the budget)'}" if "budget" in space else "")
        print(f"  {trial.value:.4f} (holdout {space['key']}): " +
              " ".join(" ".join(as_words(k, f"{v:.4g}" if isinstance(v, float) else v))
                       for k, v in trial.params.items()) + timing)


if __name__ == "__main__":
    main()
