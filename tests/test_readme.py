"""Every command in README.md's code blocks parses: train.py's flags through its own parser, every other
script's and console command's flags through its --help. A flag renamed without README following fails here."""
import re
import shlex
import subprocess
import sys

import pytest

from q1_fashion import train as q1_train
from q2_segmentation import train as q2_train
from tests.helpers import REPO

PARSERS = {"q1_fashion/train.py": q1_train.parse_args, "q2_segmentation/train.py": q2_train.parse_args}
CONSOLE = {"cs543-prepare-data": "tools.prepare_data", "cs543-check": "tools.check_submission",
           "cs543-report": "tools.report"}
SET_UP = ("pip", "source", "py", "python3", ".venv", "Set-ExecutionPolicy")  # environment set-up, not ours


def readme_commands():
    """(line, words) of each command in README's bash and PowerShell blocks that runs this project's code."""
    found = []
    for block in re.findall(r"```(?:bash|powershell)\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if not line or line.startswith("#"):
                continue
            words = shlex.split(line.replace("\\", "/"))
            if words[0] in SET_UP or words[0].startswith(".venv") or words[:3] == ["python", "-m", "pytest"]:
                continue
            found.append((line, words))
    return found


COMMANDS = readme_commands()


def test_readme_has_the_commands_it_teaches():
    """The list below is not empty by accident: both train.py scripts and all three console commands appear."""
    used = {words[1] if words[0] == "python" else words[0] for _, words in COMMANDS}
    assert {"q1_fashion/train.py", "q2_segmentation/train.py", *CONSOLE} <= used


@pytest.mark.parametrize("line, words", COMMANDS, ids=[line for line, _ in COMMANDS])
def test_each_readme_command_parses(line, words):
    if words[0] == "python" and words[1] in PARSERS:
        PARSERS[words[1]](words[2:])  # argparse exits (code 2) on a flag it does not know
        return
    command = [sys.executable, words[1]] if words[0] == "python" else [sys.executable, "-m", CONSOLE[words[0]]]
    assert words[0] in ("python", *CONSOLE), f"README runs {words[0]}, which this test does not know"
    done = subprocess.run([*command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for flag in (word.split("=")[0] for word in words[2 if words[0] == "python" else 1:] if word.startswith("--")):
        assert re.search(rf"{re.escape(flag)}\b", done.stdout), f"{line}: {flag} is not in its --help"
