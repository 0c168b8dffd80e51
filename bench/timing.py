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


def median_ratio(a, b):
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def read_history(path):
    """The epoch records of a run's history.jsonl (see common.training.save_epoch); [] before the first epoch
    ends."""
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


def training(module, flags, data_dir=DATA_DIR):
    """train.py's own training for `flags`, built as its main() builds it, for the benches that time it in-process:
    the run `resolve` gives, the data (decoded once a process for the same --limit, --holdout and --final), the
    network (`build`, after seeding as main() seeds; Q2's trunk from random weights, which a step's time does not
    depend on), its
    optimizer, schedule, weight average and loss scaler (`start_or_resume`) and loss. Returns a namespace with
    those and epoch(number) -> mean loss (train_one_epoch over the script's epoch_batches) and validate() ->
    the per-epoch validation's figures."""
    from types import SimpleNamespace

    from common.settings import resolve  # here: the benches that only time whole scripts need no PyTorch
    from common.training import batch_bounds, seed_everything, start_or_resume, train_one_epoch

    run = resolve(module.parse_args(flags), module.QUESTION)
    key = (module.__name__, str(data_dir), run.options["limit"], run.options["holdout"], run.final)
    if key not in LOADED:
        LOADED[key] = module.load_data(run, data_dir)
    data = LOADED[key]
    seed_everything(run.options["seed"])
    model = module.build(run)
    steps = len(batch_bounds(data.train_size, run.recipe["batch_size"]))
    state = start_or_resume(run, model, module.make_optimizer(model, run), steps)
    loss_fn = module.loss_function(run.recipe)
    normalize = [model.normalize] if hasattr(model, "normalize") else []  # Q2's batches: normalised for its trunk

    def epoch(number=1):
        return train_one_epoch(state, module.epoch_batches(data, run.recipe, number, *normalize), loss_fn, number)

    return SimpleNamespace(run=run, data=data, model=model, training=state, loss_fn=loss_fn, epoch=epoch,
                           validate=lambda: module.validate(state.averaged, data, run))


def step_rate(bench, batch, steps):
    """Images/s of `steps` of train.py's training steps (forward, loss, backward, optimizer and schedule step,
    weight average) of `bench` (see `training`) on one fixed `batch`; a first step builds oneDNN's kernels,
    untimed."""
    from common.training import train_one_epoch

    train_one_epoch(bench.training, [batch], bench.loss_fn, 0)
    began = time.perf_counter()
    train_one_epoch(bench.training, [batch] * steps, bench.loss_fn, 0)
    return steps * len(batch[0]) / (time.perf_counter() - began)
