"""Ctrl-C while a command is still loading its libraries (PyTorch alone takes a second or more): one line and exit
code 130, instead of the 20-line traceback Python prints for an interrupted import.

A script calls `quiet_start(__name__)` before its other imports (the console commands: tools/commands.py);
common.runtime.run_cli hands Ctrl-C back to Python's KeyboardInterrupt once the command runs, where its own
one line says what was saved. Imported as a module (by the tests, by another script), nothing changes.
"""
import os
import signal
import sys


def _starting(signum, frame):
    """Exit at once: nothing has been written yet. (Raising SystemExit here is not enough: a library that catches
    every exception around an import of its own, as PyTorch 2.4 does, swallows it and the script runs on.)"""
    sys.stdout.flush()
    print("interrupted while starting; nothing was written", file=sys.stderr, flush=True)
    os._exit(130)


def quiet_start(name):
    """Make Ctrl-C one line while the running script (`name` == "__main__") loads its imports."""
    if name == "__main__":
        signal.signal(signal.SIGINT, _starting)
