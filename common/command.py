"""How a command runs: one-line errors instead of tracebacks, Ctrl-C and SIGTERM, a GPU out of memory.

No PyTorch at import: a script calls `quiet_start(__name__)` before its other imports, so that Ctrl-C while
PyTorch loads (a second or more) is one line and exit code 130, not the 20-line traceback of an interrupted
import; `run_cli` then hands Ctrl-C back to Python's KeyboardInterrupt, where its own line says what was saved.
"""
import contextlib
import os
import signal
import sys
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


class TrainingStopped(UserError):
    """Training cannot go on (a NaN or inf loss); common.folders adds what the run's folder holds."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a cluster's scheduler or a closing notebook sends), handled as Ctrl-C is."""
    code = 143


def _starting(signum, frame):
    """Exit at once: nothing has been written yet. (Raising SystemExit here is not enough: a library that catches
    every exception around an import of its own, as PyTorch 2.4 does, swallows it and the script runs on.)"""
    sys.stdout.flush()
    print("interrupted while starting; nothing was written", file=sys.stderr, flush=True)
    os._exit(130)


def quiet_start(name):
    """Make Ctrl-C one line while the running script (`name` == "__main__") loads its imports. Imported as a
    module (by the tests, by another script), nothing changes."""
    if name == "__main__":
        signal.signal(signal.SIGINT, _starting)


def _terminate(signum, frame):
    raise Terminated()


def run_cli(main, argv=None):
    """Run a script's main(), turning UserError into `error: ...` on stderr and exit code 2.

    A GPU running out of memory is the user's to fix too (a smaller batch), so it gets the same one line.
    Ctrl-C and SIGTERM end with one line saying what was saved (the run's own, where it has one) and exit
    codes 130 and 143, as a shell reports them.
    """
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as KeyboardInterrupt (see quiet_start)
    try:
        check_checkout()
        with memory_remedy("a smaller --batch-size"):  # outside training and prediction, which name their own
            return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as stop:
        code = getattr(stop, "code", 130)
        what = "terminated (SIGTERM)" if code == 143 else "interrupted"
        print(getattr(stop, "message", f"{what}; files already written are intact"), file=sys.stderr)
        raise SystemExit(code) from None


# What an exhausted GPU raises: CUDA's own error, an Apple GPU's, and cuDNN's or cuBLAS's failed allocations
OUT_OF_MEMORY = ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED",
                 "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")


def is_out_of_memory(error):
    """Whether `error` says the GPU (CUDA or MPS) ran out of memory."""
    import torch

    return isinstance(error, torch.OutOfMemoryError) or any(text in str(error) for text in OUT_OF_MEMORY)


def out_of_memory_line(error, remedy):
    """One line for a GPU out of memory: PyTorch's first line, then what to lower (`remedy`)."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
    return f"the GPU ran out of memory ({first_line}); try {remedy}. The saved checkpoints are intact"


@contextlib.contextmanager
def memory_remedy(remedy):
    """Inside: a GPU out of memory becomes one line naming `remedy` ("a smaller --batch-size", or the
    prediction batch's flag), so the user lowers the batch that ran out. (torch.OutOfMemoryError is a
    RuntimeError; cuDNN's and cuBLAS's failed allocations are plain RuntimeErrors.)"""
    try:
        yield
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        raise UserError(out_of_memory_line(error, remedy)) from None


def check_checkout(script=None):
    """Refuse a script of one checkout that imports this project from another.

    `python q1_fashion/train.py` puts q1_fashion/ on the import path, not the repository, so `common` comes
    from wherever `pip install -e` was last run: a second checkout's modules, which would also write into that
    checkout's results/. `script`: the running script's path (default: __main__'s).
    """
    from common.files import REPO_ROOT

    script = script or getattr(sys.modules.get("__main__"), "__file__", None)
    if not script:
        return
    root = Path(script).resolve().parents[1]
    if (root / "common" / "files.py").is_file() and (root / "pyproject.toml").is_file() and root != REPO_ROOT:
        raise UserError(f"{Path(script).resolve()} is in the checkout {root}, but Python imports this project from "
                        f"{REPO_ROOT} (pip install -e was run there); run `pip install -e .` in {root}, or run "
                        f"{REPO_ROOT}'s own script")
