"""The two folders a run owns, its checkpoint folder and its results folder: the lock, who holds them, and
what a stopped run leaves behind.

A run is named by a run id, made when it starts fresh and kept in its checkpoints, in metrics.json and in
a small marker file (`run.json`) in each folder. A folder holds a run when it holds that run's files:
checkpoints (`last.pt`, `best.pt`) or outputs (metrics.json, the prediction files). The rules:

- a fresh run goes only into folders that hold no run; `--overwrite` replaces the run they hold;
- `--resume` and `--eval-only` write only into a results folder that is empty or holds their own run;
- nothing is deleted until every check that can fail before training has passed: `open_folders` checks
  and locks, the question loads its data and builds its network, and only then `claim` deletes the
  replaced run's files and writes the markers.

The lock is the operating system's (`flock` on Unix, `msvcrt.locking` on Windows): it dies with its
process, however that process ends, so a killed run leaves no stale lock. It is written here rather
than taken from the `filelock` package because that package's behaviour changed between its major
versions (4.x falls back to a marker file, which a killed process leaves behind, on file systems without
`flock`), and this lock needs exactly two behaviours on every version: refuse when another process holds
it (naming that process), and run with a warning on a file system that has no locks at all.
"""
import contextlib
import errno
import json
import os
import secrets
import sys
import time
from pathlib import Path

from common.checkpoint import CHECKPOINTS
from common.command import TrainingStopped, UserError
from common.files import prepare_dir, write_json

try:  # Unix
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:  # Windows
    import msvcrt
except ImportError:  # Unix
    msvcrt = None

LOCK = ".lock"
MARKER = "run.json"
COMMON_OUTPUTS = ("metrics.json", "history.jsonl", "model.txt", "summary.txt", "curves.png")
# msvcrt.locking locks a byte range, and a locked range cannot be read by other processes: the lock sits
# far past the holder's pid, which the refused process reads from the file's start.
WINDOWS_LOCK_OFFSET = 1 << 20
BUSY = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK), errno.EDEADLK}


def new_run_id():
    """A run's id: when it started, and random hex so two runs started in one second differ."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _try_lock(handle):
    """Lock `handle`'s file for this process without waiting; OSError when it cannot (see BUSY)."""
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    elif msvcrt is not None:
        handle.seek(WINDOWS_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        raise OSError(errno.ENOSYS, "this platform offers no file locks")


@contextlib.contextmanager
def locked(folder, optional=False):
    """Hold `folder` for this process: an exclusive OS lock on folder/.lock, released when the process ends,
    however it ends. A folder in use is refused in one line naming the process that holds it. A file system
    without locks (some network and cloud-drive mounts) runs unguarded, with a warning. `optional`: a folder
    this process only reads (--eval-only's checkpoints): where the lock file cannot be written, go on."""
    path = Path(folder) / LOCK
    try:
        handle = open(path, "a+")
    except OSError as error:
        if optional:
            yield
            return
        raise UserError(f"cannot lock {folder}: {path} cannot be opened for writing "
                        f"({error.strerror or error})") from None
    try:
        try:
            _try_lock(handle)
        except OSError as error:
            if error.errno not in BUSY:
                print(f"warning: {folder} cannot be locked ({error.strerror}); make sure no other run uses it",
                      file=sys.stderr)
                yield
                return
            handle.seek(0)
            holder = handle.read(32).strip() or "unknown"
            raise UserError(f"{folder} is in use by another run (process {holder}); wait for it to finish, "
                            "or give this run another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def outputs(run):
    """The names of the files a run of this question writes into its results folder."""
    return (*COMMON_OUTPUTS, *run.question.outputs)


def results(run, folder):
    """The files in `folder` that are a run's results: metrics.json and the prediction files."""
    names = ("metrics.json", *(name for name in run.question.outputs if name.endswith(".npy")))
    return [Path(folder) / name for name in names if (Path(folder) / name).is_file()]


def checkpoint_files(folder):
    return [Path(folder) / name for name in CHECKPOINTS if (Path(folder) / name).is_file()]


def again_hint(run):
    """The folder flags the user gave, for a message that suggests another command for the same run."""
    return "".join(f" {flag} {path}" for flag, path, given in (("--checkpoint-dir", run.checkpoint_dir,
                                                                run.checkpoint_dir_given),
                                                               ("--out-dir", run.out_dir, run.out_dir_given))
                   if given)


def read_marker(folder):
    """A folder's marker as a dict ({} when there is none, or it cannot be read)."""
    try:
        found = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def recorded_run_id(folder):
    """The run id of the results in `folder`: its marker's, else its metrics.json's (None when neither says)."""
    marker = read_marker(folder)
    if "run_id" in marker:
        return marker["run_id"]
    try:
        found = json.loads((Path(folder) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return found.get("run_id") if isinstance(found, dict) else None


def foreign_results(run):
    """What in the run's results folder belongs to another run, in a phrase; None when nothing does.

    Another run's results (metrics.json, a prediction file), or the marker of another run that can still be
    resumed (its checkpoints exist). The figures and model.txt of a run that saved nothing are no run.
    """
    holder = recorded_run_id(run.out_dir)
    if run.mode != "train" and holder == run.run_id:
        return None
    found = results(run, run.out_dir)
    if found:
        return f"{found[0].name} of run {holder or 'without an id'}"
    marker = read_marker(run.out_dir)
    elsewhere = marker.get("checkpoints")
    if (marker.get("run_id") != run.run_id and isinstance(elsewhere, str) and checkpoint_files(elsewhere)
            and Path(elsewhere).resolve() != Path(run.checkpoint_dir).resolve()):
        return f"the results folder of the run in {elsewhere}"
    return None


def check_ownership(run):
    """Refuse, before anything is touched, a run whose folders hold another run (unless --overwrite)."""
    if run.overwrite:
        return
    if run.mode == "train":
        earlier = checkpoint_files(run.checkpoint_dir)
        if earlier:
            raise UserError(f"{run.checkpoint_dir} already holds a run ({earlier[0].name}); continue it with "
                            f"--resume{again_hint(run)}, evaluate it with --eval-only{again_hint(run)}, or train "
                            "afresh over it with --overwrite")
    other = foreign_results(run)
    if other:
        remedy = ("give this run another --out-dir, or replace them with --overwrite" if run.mode == "train"
                  else "give --out-dir a folder of its own")
        raise UserError(f"{run.out_dir} holds another run's results ({other}); {remedy}")


def claim(run):
    """Make the folders this run's, once every check has passed: with --overwrite the replaced run's
    checkpoints and outputs are deleted now (and only now), then each folder's marker names this run."""
    if run.mode == "train" and run.overwrite:
        out = Path(run.out_dir)
        for path in [*checkpoint_files(run.checkpoint_dir), *(out / name for name in outputs(run))]:
            if path.is_file():
                path.unlink()
    run.claimed = True
    marker = {"run_id": run.run_id, "question": run.question.name, "name": run.name}
    if run.trains:
        write_json(run.checkpoint_dir / MARKER, dict(marker, results=str(run.out_dir)))
    write_json(run.out_dir / MARKER, dict(marker, checkpoints=str(run.checkpoint_dir)))


@contextlib.contextmanager
def open_folders(run):
    """The run's folders, made writable (the checkpoint folder only where the run trains) and locked, and
    checked to hold no other run. Deletes nothing of a run: see `claim`. An interruption (Ctrl-C, SIGTERM) leaves
    one line that says what is saved. A run refused or stopped before it wrote anything removes the folders it
    created (and their lock files): a refusal leaves the disk as it found it."""
    created = [first_missing(run.out_dir), *([first_missing(run.checkpoint_dir)] if run.trains else [])]
    out_dir = prepare_dir(run.out_dir, "--out-dir")
    if run.trains:
        prepare_dir(run.checkpoint_dir, "--checkpoint-dir")
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(locked(run.checkpoint_dir, optional=not run.trains))
            if out_dir.resolve() != Path(run.checkpoint_dir).resolve():
                stack.enter_context(locked(out_dir))
            check_ownership(run)
            try:
                yield run
            except KeyboardInterrupt as stop:
                raise interruption(stop, run) from None
            except TrainingStopped as error:
                raise UserError(f"{error}. {saved_so_far(run)}") from None
    except BaseException:
        for top, folder in filter(None, created):
            remove_if_unused(top, folder)
        raise


def first_missing(folder):
    """(the outermost folder of `folder`'s path that does not exist yet, `folder`), or None when it exists."""
    folder = Path(folder)
    if folder.exists():
        return None
    top = folder
    while not top.parent.exists():
        top = top.parent
    return top, folder


def remove_if_unused(top, folder):
    """Remove `folder` and its parents up to `top` (those this run created) where they hold nothing but a lock
    file: what a run refused before writing anything leaves behind."""
    folder = Path(folder)
    while True:
        try:
            entries = list(folder.iterdir())
        except OSError:
            return
        if any(entry.name != LOCK for entry in entries):
            return
        with contextlib.suppress(OSError):
            for entry in entries:
                entry.unlink()
            folder.rmdir()
        if folder == Path(top) or folder.exists():
            return
        folder = folder.parent


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, with the one line that says what it left behind."""

    def __init__(self, message, code):
        super().__init__(message)
        self.message, self.code = message, code


def saved_so_far(run):
    """What a stopped run leaves, in a sentence."""
    last = run.checkpoint_dir / "last.pt"
    if not run.trains:
        return f"The checkpoints in {run.checkpoint_dir} are untouched"
    if last.is_file():
        which = ("the last finished epoch" if run.device.type == "cpu" else
                 "the last epoch saved (on a GPU, at most a minute back)")
        return f"{last} holds {which} (continue with --resume{again_hint(run)})"
    return "Nothing was saved: no epoch had finished"


def interruption(stop, run):
    what = "terminated (SIGTERM)" if getattr(stop, "code", 130) == 143 else "interrupted"
    if run.trains and not (run.checkpoint_dir / "last.pt").is_file():
        message = f"{what} before the first epoch ended; nothing was saved"
        if run.overwrite and run.claimed:
            message += (f", and the run it replaced (--overwrite) was already removed from {run.checkpoint_dir} and "
                        f"{run.out_dir}")
    else:
        said = saved_so_far(run)
        message = f"{what}; {said[0].lower()}{said[1:]}"
    return Interrupted(message, getattr(stop, "code", 130))
