"""The bench scripts' own command lines: a real --help, and the refusal to time on a busy machine."""
import json
import runpy
import sys

import pytest

from bench import timing
from tests.helpers import REPO

# the bench scripts, and the tools run by hand that are not benchmarks
SCRIPTS = sorted([*(f"bench/{path.name}" for path in (REPO / "bench").glob("*.py")
                    if path.name not in ("__init__.py", "timing.py")), "tools/bad_inputs.py", "tools/same_numbers.py"])


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_bench_script_has_a_real_help(script, monkeypatch, capsys):
    """--help prints the script's usage and runs nothing (neither a train.py nor the bench itself starts)."""
    name = script.split("/")[1]
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    monkeypatch.setattr(timing, "run_script", lambda *a, **k: pytest.fail("--help started a training"))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / script), run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {name}")


def test_a_busy_machine_is_refused_in_one_line_unless_forced(monkeypatch):
    monkeypatch.setattr(timing, "other_training_processes", lambda: ["4242 (python q1_fashion/train.py)"])
    with pytest.raises(SystemExit) as exit_info:
        timing.refuse_if_busy()
    assert str(exit_info.value).startswith("error: the machine is busy (other PyTorch work is running: 4242 (python")
    assert "\n" not in str(exit_info.value)
    timing.refuse_if_busy(force=True)  # --force times anyway
    monkeypatch.setattr(timing, "other_training_processes", lambda: [])
    monkeypatch.setattr(timing, "load_average", lambda: 7.5)
    with pytest.raises(SystemExit, match=r"load average 7.5 on \d+ cores"):
        timing.refuse_if_busy()
    monkeypatch.setattr(timing, "load_average", lambda: 0.1)
    timing.refuse_if_busy()  # quiet: no refusal


def test_another_pytorch_process_is_found_and_the_load_is_read_without_os_getloadavg(monkeypatch):
    """The busy check reads the process table and the load through psutil, so it works where os.getloadavg and
    /proc do not exist (Windows): a real second process named like a bench is found."""
    import subprocess

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "bench/pretend.py"])
    try:
        monkeypatch.delattr(timing.os, "getloadavg")
        assert any(entry.startswith(f"{other.pid} (") for entry in timing.other_training_processes())
        assert timing.load_average() >= 0
    finally:
        other.kill()
        other.wait()


def test_an_in_process_bench_trains_as_the_script_does(tiny_fashion_data, tmp_path):
    """bench.timing.training builds train.py's training from the script's own functions: its first epoch's mean
    loss is the one a real run of the same flags records (another path through the same code: main())."""
    from q1_fashion import train as q1_train
    flags = ["--model", "basenet", "--limit", "1000", "--precision", "fp32", "--augment"]
    q1_train.main([*flags, "--epochs", "1", "--no-tta", "--data-dir", str(tiny_fashion_data), "--out-dir",
                   str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt")])
    recorded = json.loads((tmp_path / "out" / "metrics.json").read_text())["history"][0]["train_loss"]
    bench = timing.training(q1_train, [*flags, "--epochs", "1"], data_dir=tiny_fashion_data)
    assert bench.epoch(1) == recorded
    assert set(bench.validate()) == {"val_accuracy"}


@pytest.mark.slow
def test_the_runner_tabulates_each_run_and_their_spread(tiny_fashion_data, tmp_path):
    """bench/runs.py over two seeds: one row a run with the figures its metrics.json recorded (kept with --keep),
    then their mean, min and max; --evaluate scores the kept runs again with other views."""
    import statistics
    import subprocess

    flags = f"--model basenet --epochs 1 --limit 1000 --no-tta --data-dir {tiny_fashion_data}"
    done = subprocess.run([sys.executable, "bench/runs.py", "q1", "--flags", flags, "--seeds", "0,1", "--keep",
                           str(tmp_path), "--force"], cwd=REPO, capture_output=True, text=True, check=True)
    recorded = [json.loads((tmp_path / f"seed-{seed}" / "results" / "metrics.json").read_text())["val_accuracy"]
                for seed in (0, 1)]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| seed ")]
    assert [float(row[6]) for row in rows] == pytest.approx(recorded, abs=5e-3)  # 4 significant digits
    assert f"val %: mean {statistics.mean(recorded):.4g}, min {min(recorded):.4g}, max {max(recorded):.4g}" \
        in done.stdout
    again = subprocess.run([sys.executable, "bench/runs.py", "q1", "--tta", "--flags",
                            f"--data-dir {tiny_fashion_data}", "--evaluate", str(tmp_path / "seed-0"), "--force"],
                           cwd=REPO, capture_output=True, text=True, check=True)
    assert "| seed-0 |" in again.stdout and "2 test-time views (the image and its mirror)" in again.stdout
