"""The console commands' entry points (pyproject.toml's [project.scripts]): each makes Ctrl-C one line
(common.command.quiet_start) before it loads its module, which imports PyTorch."""
import importlib

from common.command import quiet_start


def _run(module):
    quiet_start("__main__")
    return importlib.import_module(module).cli()


def prepare_data():
    return _run("tools.prepare_data")


def check():
    return _run("tools.check_submission")


def report():
    return _run("tools.report")
