"""Helpers for the benchmarks: side-by-side alternation and timed runs of the project's scripts."""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.paths import REPO_ROOT


def alternate(first, second, rounds):
    """Call first() and second() alternately `rounds` times; each returns a rate. Returns both lists."""
    a, b = [], []
    for round_number in range(1, rounds + 1):
        a.append(first())
        b.append(second())
        print(f"  round {round_number}: {a[-1]:.4g} vs {b[-1]:.4g}  (ratio {a[-1] / b[-1]:.2f})", flush=True)
    return a, b


def median_ratio(a, b):
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def run_script(argv, epoch_pattern, key, echo=True):
    """Run a train.py as a child process, echoing its output (`echo`); timestamp each epoch line.

    Returns (total wall seconds, [(seconds since start, epoch, metric value), ...]).
    """
    started = time.perf_counter()
    # unbuffered, so each epoch line arrives (and is timestamped) when the child prints it
    process = subprocess.Popen([sys.executable, *argv], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    epochs = []
    for line in process.stdout:
        if echo:
            print(line, end="", flush=True)
        match = re.match(epoch_pattern, line)
        if match and key in line:
            value = float(re.search(rf"{key} ([0-9.]+)", line).group(1))
            epochs.append((time.perf_counter() - started, int(match.group(1)), value))
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit code {process.returncode}")
    return time.perf_counter() - started, epochs


def run_training(script, args, key, echo=True):
    """Run `python SCRIPT ARGS` (a train.py) timed, its files in a scratch folder unless ARGS name --out-dir
    (kept there) or --checkpoint-dir. Returns (total wall seconds, timestamped epochs as run_script's, metrics.json).
    """
    args = list(args)
    with tempfile.TemporaryDirectory() as scratch:
        if "--out-dir" in args:  # absolute: the script runs from the repository root, and metrics.json is read here
            at = args.index("--out-dir") + 1
            args[at] = str(Path(args[at]).resolve())
        out = Path(args[args.index("--out-dir") + 1]) if "--out-dir" in args else Path(scratch) / "out"
        folders = [] if "--out-dir" in args else ["--out-dir", str(out)]
        folders += [] if "--checkpoint-dir" in args else ["--checkpoint-dir", str(Path(scratch) / "c")]
        total, epochs = run_script([script, *args, *folders], r"epoch +(\d+)/", key, echo)
        return total, epochs, json.loads((out / "metrics.json").read_text())
