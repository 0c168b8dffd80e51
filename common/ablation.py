"""The ablation driver both questions share: train a ladder of runs, each adding one component."""
import json
from pathlib import Path

from common.plotting import plot_bars
from common.runtime import atomic_path


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
