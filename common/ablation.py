"""The ablation driver both questions share: train a ladder of runs, each adding one component."""
import json
from pathlib import Path

from common.cli import positive_int
from common.plotting import plot_bars
from common.runtime import atomic_path


def add_ablation_arguments(parser, question, default_epochs):
    """Flags both ablate.py scripts take."""
    parser.add_argument("--epochs", type=positive_int, help=f"epochs per step (default: {default_epochs})")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--limit", type=positive_int, help="first N training images only (quick checks)")
    parser.add_argument("--results-dir", type=Path, default=Path("results") / question)
    parser.add_argument("--checkpoints-dir", type=Path, default=Path("checkpoints") / question)


def passed_through(args):
    """The train.py arguments every step of the ladder gets from the ablation's own flags."""
    extra = ["--data-dir", str(args.data_dir), "--device", args.device]
    extra += ["--epochs", str(args.epochs)] if args.epochs else []
    return extra + (["--limit", str(args.limit)] if args.limit else [])


def run_ladder(steps, train_main, common_args, results_root, checkpoints_root, columns, extra_args=()):
    """Train each (name, slug, args) step with `train_main`, then tabulate `columns` of its metrics.json.

    Steps are cumulative by construction: each step's args include the previous step's switches.
    `columns` is a list of (metrics key, heading). Returns the rows written to ablation.md.
    """
    rows = []
    for number, (name, slug, args) in enumerate(steps, start=1):
        out_dir = Path(results_root) / "ablation" / slug
        print(f"\n=== ablation step {number}/{len(steps)}: {name} ===")
        train_main([*common_args, *args, *extra_args, "--out-dir", str(out_dir),
                    "--checkpoint-dir", str(Path(checkpoints_root) / "ablation" / slug)])
        metrics = json.loads((out_dir / "metrics.json").read_text())
        rows.append({"component": name, "params": metrics["params"], "epochs": metrics["epochs"],
                     **{key: metrics[key] for key, _ in columns}})
    table = ["| component | params | epochs | " + " | ".join(heading for _, heading in columns) + " |",
             "|---|---:|---:|" + "---:|" * len(columns)]
    for row in rows:
        values = " | ".join(f"{row[key]:.4f}" if row[key] < 1 else f"{row[key]:.2f}" for key, _ in columns)
        table.append(f"| {row['component']} | {row['params']:,} | {row['epochs']} | {values} |")
    with atomic_path(Path(results_root) / "ablation.md") as tmp:
        tmp.write_text("\n".join(table) + "\n")
    key, heading = columns[0]
    plot_bars([row["component"] for row in rows], [row[key] for row in rows],
              Path(results_root) / "ablation.png", ylabel=heading, title="ablation, each step adds to the last")
    print("\n" + "\n".join(table))
    print(f"wrote {Path(results_root) / 'ablation.md'} and ablation.png")
    return rows
