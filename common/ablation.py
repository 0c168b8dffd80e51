"""What both ablate.py scripts share: a ladder of runs, each adding one change to the last: its steps' settings
and folders, and its table."""
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


def step_folders(args, slug):
    """(results folder, checkpoint folder) of the ablation step `slug`, under the ablation's own folders."""
    return Path(args.results_dir) / "ablation" / slug, Path(args.checkpoints_dir) / "ablation" / slug


def step_row(name, out_dir, columns):
    """The table row of a finished step: its name, parameters, epochs and the metrics `columns` name (a list of
    (metrics key, heading)), read from the metrics.json its run wrote."""
    metrics = json.loads((Path(out_dir) / "metrics.json").read_text())
    return {"component": name, "params": metrics["params"], "epochs": metrics["epochs"],
            **{key: metrics[key] for key, _ in columns}}


def write_ablation(rows, columns, results_root):
    """Write the ladder's table (ablation.md) and its first column's bar chart (ablation.png) in `results_root`,
    print the table, and return the rows."""
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
