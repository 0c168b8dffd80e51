"""Full runs of a train.py, each timed from process start to exit (training, validation, predictions written),
with the figures it recorded: over seeds, over candidate sets of flags, or (--evaluate) over trained runs'
checkpoints with other test-time views.

Each candidate is one quoted set of train.py flags ("" is the default recipe); --flags go to every run. One
row a run: its seconds, epochs, precision, views, val figures, its last validated epoch's figure, and for Q1
when 92.1 % (the reference report's best) and 94.5 % (the target) were first reached. Then, per candidate
over its runs, the mean, min, max and spread of each figure, and the slowest run against the time budget.

    python bench/runs.py q1                                       # the default recipe, seed 0
    python bench/runs.py q1 "" "--epochs 20" "--width 48 --epochs 20" "--depth 3 --epochs 26"   # the frontier
    python bench/runs.py q1 --flags "--model basenet" --keep runs/q1      # files kept for the report
    python bench/runs.py q2 --seeds 0,1,2 --keep runs/q2          # Q2's accuracy over three seeds, runs kept
    python bench/runs.py q2 "--tta-scales 1" "--tta-scales 0.75,1,1.25,1.5" --evaluate runs/q2/seed-*
"""
import shlex
import statistics
import tempfile
from pathlib import Path

from bench.timing import bench_parser, refuse_if_busy, run_training

SCRIPTS = {"q1": "q1_fashion/train.py", "q2": "q2_segmentation/train.py"}
FOLLOWED = {"q1": "val_accuracy", "q2": "val_mIoU"}  # the per-epoch figure that picks best.pt
# seconds a default run must fit on the slowest machine of this kind (AVX2 EPYC, fp32): Q1 600 s with 30 % margin
BUDGET = {"q1": 420, "q2": 1200}
THRESHOLDS = {"q1": (92.1, 94.5), "q2": ()}  # Q1: the reference report's best val accuracy; this project's target


def figures(question, metrics):
    """The val figures a run recorded, by column name."""
    if question == "q1":
        return {"val %": metrics["val_accuracy"]}
    return {"val mAP": metrics["val_mAP"], "val mIoU": metrics["val_mIoU"]}


def row(question, label, seconds, epochs, metrics):
    """One run's row: `epochs` are its validated epochs as (seconds since start, epoch, followed figure)."""
    found = {"run": label, "seconds": seconds, "epochs": metrics["epochs"], "precision": metrics["eval_precision"],
             "views": metrics["views"], "scored on": metrics["data"]["val_split"], **figures(question, metrics)}
    if epochs:  # a training run (an --evaluate run trains no epoch)
        found[f"last validated epoch: {FOLLOWED[question]}"] = epochs[-1][2]
        for threshold in THRESHOLDS[question]:
            found[f"seconds to {threshold}"] = next((at for at, _, value in epochs if value >= threshold), None)
    return found


def table(rows):
    """A Markdown table of `rows` (dicts of one set of keys); a number as 4 significant digits, None as 'never'."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for found in rows:
        lines.append("| " + " | ".join("never" if value is None else f"{value:.4g}" if isinstance(value, float)
                                        else str(value) for value in found.values()) + " |")
    return "\n".join(lines)


def spread(rows):
    """Per numeric column of `rows`: mean, min, max and (over 2 or more runs) the standard deviation."""
    lines = []
    for key in rows[0]:
        values = [found[key] for found in rows]
        if key == "epochs" or not all(isinstance(value, (int, float)) for value in values):
            continue
        std = f", std {statistics.stdev(values):.4g}" if len(values) > 1 else ""
        lines.append(f"  {key}: mean {statistics.mean(values):.4g}, min {min(values):.4g}, max {max(values):.4g}{std}")
    return "\n".join(lines)


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("question", choices=SCRIPTS)
    parser.add_argument("candidates", nargs="*", metavar="FLAGS",
                        help="a candidate's train.py flags as one quoted string (default: the default recipe); a "
                             "single flag may go unquoted (--no-tta)")
    parser.add_argument("--flags", default="", help="train.py flags for every run, as one quoted string")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, each candidate run once a seed")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep each run's files in DIR/seed-S/{results,checkpoints} (DIR/N-seed-S with several "
                             "candidates): for the report, or for --evaluate")
    parser.add_argument("--evaluate", nargs="+", type=Path, metavar="RUN",
                        help="evaluate these trained runs (folders holding checkpoints/, as --keep writes them) with "
                             "--eval-only and each candidate's flags, instead of training")
    args, single_flags = parser.parse_known_args()  # a one-flag candidate, e.g. --no-tta, is no option of ours
    args.candidates = [*args.candidates, *single_flags] or [""]
    refuse_if_busy(args.force)
    script, followed = SCRIPTS[args.question], FOLLOWED[args.question]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    results = {}
    for number, candidate in enumerate(args.candidates, 1):
        runs = []
        for target in args.evaluate or seeds:
            flags = [*shlex.split(args.flags), *shlex.split(candidate)]
            with tempfile.TemporaryDirectory() as scratch:
                if args.evaluate:
                    label = target.name
                    flags += ["--eval-only", "--checkpoint-dir", str((target / "checkpoints").resolve()),
                              "--out-dir", scratch]
                else:
                    label = f"seed {target}"
                    flags += ["--seed", str(target)]
                    if args.keep:
                        kept = args.keep.resolve() / (f"{number}-seed-{target}" if len(args.candidates) > 1
                                                      else f"seed-{target}")
                        flags += ["--out-dir", str(kept / "results"), "--checkpoint-dir", str(kept / "checkpoints")]
                seconds, epochs, metrics = run_training(script, flags, followed, echo=False)
            runs.append(row(args.question, label, seconds, epochs, metrics))
            print(f"{candidate or '(default)'}, {label}: {seconds:.0f} s, " + ", ".join(
                f"{key} {value:.4g}" for key, value in figures(args.question, metrics).items()), flush=True)
        results[candidate or "(default)"] = runs
    for candidate, runs in results.items():
        print(f"\n{candidate}\n\n{table(runs)}\n\nover {len(runs)} run{'s' * (len(runs) > 1)}:\n{spread(runs)}")
    slowest = max(found["seconds"] for runs in results.values() for found in runs)
    print(f"\nslowest run {slowest:.0f} s; a default run's budget {BUDGET[args.question]} s")


if __name__ == "__main__":
    main()
