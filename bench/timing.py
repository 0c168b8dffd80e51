"""Helpers for the benchmarks: a quiet machine, side-by-side alternation and timed runs of the project's scripts."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.files import DATA_DIR, REPO_ROOT


def bench_parser(doc):
    """An argument parser for a bench script: its docstring as --help, and --force."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true",
                        help="time even on a busy machine (the figures are then worthless for comparisons)")
    return parser


def other_training_processes():
    """Other processes of this machine running PyTorch work of ours: train.py, a bench, pytest (by command line).
    psutil reads the process table on Linux, macOS and Windows alike."""
    import psutil

    found, own = [], {os.getpid(), os.getppid()}
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.info["pid"] in own:
            continue
        command = " ".join(process.info["cmdline"] or []).replace("\\", "/")
        if "python" in command.lower() and any(word in command for word in ("train.py", "ablate.py", "bench/",
                                                                             "pytest", "sweep")):
            found.append(f"{process.info['pid']} ({command.strip()[:60]})")
    return found


def load_average():
    """The 1-minute load average, through psutil: the OS's on Unix, psutil's emulation on Windows; where psutil
    has neither, the cores busy over one second measured now."""
    import psutil

    if hasattr(psutil, "getloadavg"):  # Unix: the OS's own; Windows: psutil's emulation
        return psutil.getloadavg()[0]
    return psutil.cpu_percent(interval=1.0) / 100 * (os.cpu_count() or 1)


def refuse_if_busy(force=False):
    """Timings taken while another PyTorch process runs are worthless (on 2 cores a 6 s epoch took 60-123 s):
    refuse, in one line, unless --force. Busy: another training, bench or test process, or a 1-minute load
    average above 3/4 of the cores."""
    others = other_training_processes()
    load, cores = load_average(), os.cpu_count() or 1
    if force or (not others and load <= 0.75 * cores):
        return
    why = f"other PyTorch work is running: {others[0]}" if others else f"load average {load:.1f} on {cores} cores"
    raise SystemExit(f"error: the machine is busy ({why}); timings now would be worthless. Wait for it to be "
                     "quiet, or pass --force")


def alternate(first, second, rounds):
    """Call first() and second() alternately `rounds` times; each returns a rate. Returns both lists."""
    a, b = [], []
    for round_number in range(1, rounds + 1):
        a.append(first())
        b.append(second())
        print(f"  round {round_number}: {a[-1]:.4g} vs {b[-1]:.4g}  (ratio {a[-1] / b[-1]:.2f})", flush=True)
    return a, b


def images_per_second(step, steps, batch):
    """Images/s of `steps` calls of step() on batches of `batch`; a first call builds oneDNN's kernels, untimed."""
    step()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - began)


def median_ratio(a, b):
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def read_history(path):
    """The epoch records of a run's history.jsonl (see common.loop.fit); [] before the first epoch ends."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def follow(process, history, poll=0.5):
    """Yield each epoch record of `history` (a history.jsonl) as the running `process` writes it, until it ends.
    The file is replaced whole after each epoch (atomically), so a record is never read half written."""
    seen = 0
    while True:
        ended = process.poll() is not None
        records = read_history(history)
        yield from records[seen:]
        seen = max(seen, len(records))
        if ended:
            return
        time.sleep(poll)


def run_script(argv, out_dir, key, echo=True):
    """Run a train.py as a child process writing into `out_dir`, its output shown (`echo`) or dropped.

    Returns (total wall seconds, [(seconds since start, epoch, metric value), ...]) for the epochs whose
    record in out_dir/history.jsonl holds `key`.
    """
    started, wall = time.perf_counter(), time.time()
    output = None if echo else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, *argv], cwd=REPO_ROOT, stdout=output, stderr=output)
    epochs = [(record["finished_at"] - wall, record["epoch"], record[key])
              for record in follow(process, Path(out_dir) / "history.jsonl") if key in record]
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
        total, epochs = run_script([script, *args, *folders], out, key, echo)
        return total, epochs, json.loads((out / "metrics.json").read_text())


LOADED = {}  # (train.py, the data flags) -> its data, decoded once a process


def training_pieces(module, flags):
    """train.py's own training for `flags`, as the benches time it: (run, model, run_epoch, validate), from the
    run `resolve` gives, the question's `build()` (seeded 0) and `trainer()`. The data is decoded once a
    process for the same --limit, --holdout and --final."""
    import torch

    from common.settings import resolve  # here: the benches that only time whole scripts need no PyTorch

    run = resolve(module.parse_args(flags), module.QUESTION)
    key = (module.__name__, run.options["limit"], run.options["holdout"], run.final)
    if key not in LOADED:
        LOADED[key] = module.load_data(run, DATA_DIR)
    torch.manual_seed(0)
    model = module.build(run)
    _, run_epoch, validate = module.trainer(run, model, LOADED[key])
    return run, model, run_epoch, validate
