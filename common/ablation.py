"""The ablation driver both questions share: train a ladder of runs, each adding one change to the last."""
import json
import re
from pathlib import Path

from common.files import CHECKPOINTS_DIR, DATA_DIR, RESULTS_DIR, write_text
from common.plotting import plot_bars
from common.settings import as_words, positive_int


def add_ablation_arguments(parser, question, default_epochs):
    """Flags both ablate.py scripts take."""
    parser.add_argument("--epochs", type=positive_int, help=f"epochs per step (default: {default_epochs})")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--limit", type=positive_int, help="first N training images only (quick checks)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR / question)
    parser.add_argument("--checkpoints-dir", type=Path, default=CHECKPOINTS_DIR / question)


def passed_through(args):
    """The train.py arguments every step of the ladder gets from the ablation's own flags."""
    extra = ["--data-dir", str(args.data_dir), "--device", args.device]
    extra += ["--epochs", str(args.epochs)] if args.epochs else []
    return extra + (["--limit", str(args.limit)] if args.limit else [])


def cumulative(steps):
    """[(name, slug, settings)] from [(name, change)]: each step's settings are the last step's plus its change.

    A change that maps a key to None removes that setting (for a last row that switches to another model).
    """
    settings, ladder = {}, []
    for number, (name, change) in enumerate(steps, start=1):
        settings = {key: value for key, value in {**settings, **change}.items() if value is not None}
        slug = f"{number}_" + re.sub(r"[^a-z0-9]+", "_", name.lower().split("(")[0]).strip("_")
        ladder.append((name, slug, settings))
    return ladder


def as_flags(settings):
    """{"augment": True, "dropout": 0.2} -> ["--augment", "--dropout", "0.2"] (False -> "--no-augment")."""
    return [word for key, value in settings.items() for word in as_words(key, value)]


def run_ladder(steps, train_main, common_args, results_root, checkpoints_root, columns, extra_args=()):
    """Train each step of `steps` [(name, change)] cumulatively with `train_main`, then tabulate its metrics.

    `columns` is a list of (metrics key, heading). Writes ablation.md and ablation.png in `results_root`
    and returns the rows.
    """
    rows = []
    ladder = cumulative(steps)
    for number, (name, slug, settings) in enumerate(ladder, start=1):
        out_dir = Path(results_root) / "ablation" / slug
        print(f"\n=== ablation step {number}/{len(ladder)}: {name} ===")
        # --overwrite: each step is a fresh training; running the ablation again retrains it
        train_main([*common_args, *as_flags(settings), *extra_args, "--out-dir", str(out_dir),
                    "--checkpoint-dir", str(Path(checkpoints_root) / "ablation" / slug), "--overwrite"])
        metrics = json.loads((out_dir / "metrics.json").read_text())
        rows.append({"component": name, "params": metrics["params"], "epochs": metrics["epochs"],
                     **{key: metrics[key] for key, _ in columns}})
    table = ["| component | params | epochs | " + " | ".join(heading for _, heading in columns) + " |",
             "|---|---:|---:|" + "---:|" * len(columns)]
    for row in rows:
        values = " | ".join(f"{row[key]:.4f}" if row[key] < 1 else f"{row[key]:.2f}" for key, _ in columns)
        table.append(f"| {row['component']} | {row['params']:,} | {row['epochs']} | {values} |")
    write_text(Path(results_root) / "ablation.md", "\n".join(table) + "\n")
    key, heading = columns[0]
    plot_bars([row["component"] for row in rows], [row[key] for row in rows],
              Path(results_root) / "ablation.png", ylabel=heading, title="ablation, each step adds to the last")
    print("\n" + "\n".join(table))
    print(f"wrote {Path(results_root) / 'ablation.md'} and ablation.png")
    return rows
