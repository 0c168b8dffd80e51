"""Do the same commands still give the same numbers? A refactoring's proof.

Runs a fixed list of short trainings, each followed by a resume of one more epoch in the same folders and
by --eval-only with other test-time views into a results folder of its own, and records what must not
change: every metric in metrics.json (timings and the settings' layout aside)
and the SHA-256 of each prediction file. `--record FILE` writes them; `--compare FILE` runs again and
prints, per run, `same` or the first differences. Everything runs at --precision fp32, so the figures do
not depend on whether the CPU has AMX. About 8 minutes on 2 CPU cores.

    python tools/same_numbers.py --record before.json     # on the old code
    python tools/same_numbers.py --compare before.json    # on the new code
"""
import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common.files import REPO_ROOT

RUNS = {  # name: (script, flags of the fresh run, the other views --eval-only then predicts with)
    "q1 basenet 2 epochs": ("q1_fashion/train.py", ["--model", "basenet", "--epochs", "2"], ["--tta"]),
    "q1 improved 1 epoch, limit 5000": ("q1_fashion/train.py", ["--epochs", "1", "--limit", "5000"],
                                        ["--tta-shift", "0"]),
    "q2 improved 1 epoch, limit 32": ("q2_segmentation/train.py", ["--epochs", "1", "--limit", "32"],
                                      ["--tta-scales", "1,1.25"]),
}
# timings vary; the settings' layout may change; a run's id and its record of what happened are new every run
SKIPPED = {"train_seconds", "config", "precision", "run_id", "training"}


def figures(out_dir):
    """What a run must reproduce: its metrics (less SKIPPED) and its prediction files' digests."""
    metrics = json.loads((out_dir / "metrics.json").read_text())
    kept = without_folders({key: value for key, value in metrics.items() if key not in SKIPPED})
    for path in sorted(out_dir.glob("*.npy")):
        kept[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return kept


def without_folders(figures):
    """`figures` less the data folder's path in the data records: where the data lies is the checkout's (the old
    code may run from another one: a git worktree), not a number the code computes."""
    return {key: {k: v for k, v in value.items() if k != "folder"} if key in ("data", "trained_on") and
            isinstance(value, dict) else value for key, value in figures.items()}


def run(script, flags, out_dir, checkpoint_dir):
    command = [sys.executable, script, *flags, "--precision", "fp32", "--out-dir", str(out_dir),
               "--checkpoint-dir", str(checkpoint_dir)]
    print("$", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return figures(out_dir)


def measure(names):
    results = {}
    for name in names:
        script, flags, views = RUNS[name]
        epochs = int(flags[flags.index("--epochs") + 1])
        with tempfile.TemporaryDirectory() as scratch:
            out, checkpoints = Path(scratch) / "out", Path(scratch) / "checkpoints"
            results[name] = run(script, flags, out, checkpoints)
            resumed = [*flags[:flags.index("--epochs")], "--epochs", str(epochs + 1),
                       *flags[flags.index("--epochs") + 2:], "--resume"]
            results[name + ", resumed +1 epoch"] = run(script, resumed, out, checkpoints)
            at = flags.index("--epochs")
            evaluated = [*flags[:at], *flags[at + 2:], "--eval-only", *views]
            results[name + f", --eval-only {' '.join(views)}"] = run(script, evaluated, Path(scratch) / "eval",
                                                                      checkpoints)
    return results


def differences(before, after, prefix=""):
    """The keys (dotted paths) whose values differ between two figure trees, or that the new one lost. A field
    only the new one has is an addition, not a difference: `additions` lists them."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if key not in after:
                found.append(f"{prefix}{key} (only in before)")
            elif key not in before:
                continue
            else:
                found += differences(before[key], after[key], f"{prefix}{key}.")
        return found
    return [] if before == after else [f"{prefix.rstrip('.')}: {before} -> {after}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", type=Path, metavar="FILE", help="write the figures to FILE")
    mode.add_argument("--compare", type=Path, metavar="FILE", help="compare against the figures in FILE")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS), metavar="NAME",
                        help=f"which runs (default all: {'; '.join(RUNS)})")
    args = parser.parse_args()
    before = json.loads(args.compare.read_text()) if args.compare else None
    results = measure(args.runs)
    if args.record:
        args.record.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.record}")
        return
    failed = 0
    print("\n| run | result | fields added |\n|---|---|---|")
    for name, after in results.items():
        found = differences(without_folders(before.get(name, {})), after)
        failed += bool(found)
        added = sorted(set(after) - set(before.get(name, {})))
        print(f"| {name} | {'same' if not found else '; '.join(found[:3])} | {', '.join(added)} |")
    if failed:
        raise SystemExit(f"{failed} of {len(results)} runs differ")


if __name__ == "__main__":
    main()
