"""Millisecond tests of the command-line plumbing: recipes, flag precedence, the learning-rate schedule."""
import math
import subprocess
import sys

import pytest

from common.ablation import as_flags, cumulative
from common.settings import as_words
from common.training import lr_schedule
from q1_fashion import train as q1_train
from q2_segmentation import train as q2_train
from tests.helpers import REPO, settings


def test_a_flag_beats_the_recipe_and_the_recipe_fills_the_rest():
    run = settings(q1_train, "--lr", "0.3", "--no-augment", "--width", "8", "--precision", "fp32")
    assert run.recipe["lr"] == 0.3 and run.recipe["augment"] is False and run.recipe["width"] == 8  # the flags
    assert run.recipe["epochs"] == 15 and run.recipe["depth"] == 2  # the improved recipe's own values
    assert run.name == "improved-width8"  # network switches name the folder; training flags do not
    basenet = settings(q1_train, "--model", "basenet", "--precision", "fp32")
    assert basenet.recipe["lr"] == 0.005 and basenet.recipe["schedule"] == "constant"  # the course starter's
    assert basenet.options == {"seed": 0, "limit": None, "final": False, "holdout": None}
    q2 = settings(q2_train, "--backbone", "efficientnet_lite0", "--epochs", "3", "--precision", "fp32")
    assert q2.recipe["epochs"] == 3 and q2.recipe["max_scale"] == 1.5 and q2.recipe["backbone"] == "efficientnet_lite0"


def test_family_switches_for_another_model_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        q1_train.parse_args(["--model", "basenet", "--width", "8", "--no-batchnorm"])
    assert exit_info.value.code == 2
    assert "--width, --batchnorm only apply to --model improved" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        q2_train.parse_args(["--model", "improved", "--stepwise"])
    assert "--stepwise only apply to --model ladder" in capsys.readouterr().err
    q1_train.parse_args(["--model", "improved", "--width", "8"])  # the family itself takes them


def test_onecycle_schedule_values():
    multiplier = lr_schedule("onecycle", total_steps=100, warmup_fraction=0.2)
    assert multiplier(0) == pytest.approx(0.1)  # warm-up starts at a tenth of the peak
    assert multiplier(10) == pytest.approx(0.1 + 0.9 * 10 / 20)
    assert multiplier(20) == pytest.approx(1.0)  # end of warm-up: the peak
    assert multiplier(60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 40 / 80)))
    assert multiplier(100) == pytest.approx(0.0)  # cosine down to zero at the end
    assert lr_schedule("constant", 100)(57) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_schedule("step", 100)


def test_ablation_steps_accumulate_one_change_each():
    ladder = cumulative([("baseline (plain)", {"augment": False, "width": 6}), ("+ augmentation", {"augment": True}),
                         ("+ width", {"width": 32}), ("other model", {"model": "improved", "width": None})])
    assert [slug for _, slug, _ in ladder] == ["1_baseline", "2_augmentation", "3_width", "4_other_model"]
    assert ladder[1][2] == {"augment": True, "width": 6}
    assert ladder[2][2] == {"augment": True, "width": 32}
    assert ladder[3][2] == {"augment": True, "model": "improved"}
    assert as_flags({"augment": True, "batchnorm": False, "dropout": 0.2}) == ["--augment", "--no-batchnorm",
                                                                              "--dropout", "0.2"]


@pytest.mark.parametrize("script", [q1_train, q2_train])
def test_every_recipe_setting_written_as_flags_parses_back_to_itself(script):
    # as_words writes run folders' names, the ablations' and the sweep's command lines: what it writes,
    # train.py must read back as the same value (lists such as --tta-scales, booleans as --no-...)
    flags = vars(script.parse_args([]))
    checked = 0
    for model, recipe in script.RECIPES.items():
        for key, value in recipe.items():
            if key in flags and value is not None:
                args = script.parse_args(["--model", model, *as_words(key, value)])
                assert getattr(args, key) == value, (model, key, value)
                checked += 1
    assert checked > 20
    assert as_words("tta_scales", [1.0, 1.25]) == ["--tta-scales", "1,1.25"]
    assert as_words("stride4_refine", False) == ["--no-stride4-refine"]


@pytest.mark.slow  # two fresh interpreters importing PyTorch each: seconds, not milliseconds
@pytest.mark.parametrize("script", ["q1_fashion/train.py", "q2_segmentation/train.py"])
def test_scripts_start_from_any_directory(tmp_path, script):
    # from another directory by absolute path, and from inside the script's own folder
    for cwd, path in ((tmp_path, REPO / script), (REPO / script.split("/")[0], script.split("/")[1])):
        result = subprocess.run([sys.executable, str(path), "--help"], cwd=cwd, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage:")


@pytest.mark.repository_folders
def test_default_folders_are_the_repositorys_and_typed_paths_are_the_users(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = settings(q1_train, "--model", "basenet")
    assert q1_train.parse_args([]).data_dir == REPO / "data"
    assert run.out_dir == REPO / "results" / "q1_fashion" / "basenet"
    assert run.checkpoint_dir == REPO / "checkpoints" / "q1_fashion" / "basenet"
    assert settings(q1_train, "--final").out_dir.name == "improved-final"  # its own folder by default
    typed = settings(q1_train, "--data-dir", "mine", "--out-dir", "out")
    assert typed.out_dir.resolve() == tmp_path / "out"
    assert q1_train.parse_args(["--data-dir", "mine"]).data_dir.resolve() == tmp_path / "mine"


def test_onecycle_on_a_four_step_run_by_hand():
    """A run of 4 steps warms up over 1 (15 % of 4, at least 1), then follows the cosine to 0 and stays there:
    step 0: 0.1; 1: 1; 2: (1 + cos(pi/3))/2 = 0.75; 3: (1 + cos(2pi/3))/2 = 0.25; 4 and past the end: 0."""
    import math

    from common.training import lr_schedule
    multiplier = lr_schedule("onecycle", 4)
    expected = [0.1, 1.0, 0.75, 0.25, 0.0, 0.0]
    for step, value in enumerate(expected):
        assert math.isclose(multiplier(step), value, abs_tol=1e-12), step
    assert lr_schedule("constant", 4)(3) == 1.0
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        lr_schedule("cosine", 4)
