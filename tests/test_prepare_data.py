import shutil

import pytest

from common.runtime import UserError
from tests.helpers import add_cloud_drive_copies
from tools.prepare_data import prepare


def test_from_zip_with_a_top_folder(tmp_path, tiny_course_data):
    archive = shutil.make_archive(str(tmp_path / "data"), "zip", root_dir=tiny_course_data.parent, base_dir="data")
    target = prepare(archive, tmp_path / "repo-data")
    assert (target / "classes.txt").read_text().startswith("background")
    names = sorted(p.name for p in (target / "train").iterdir())
    assert names == ["0.jpg", "0.png", "1.jpg", "1.png", "2.jpg", "2.png"]
    assert (target / "fashion" / "fashion_secret_test_data.npy").is_file()
    assert not (target / ".unpacked").exists()


def test_from_folder_by_link_and_again_by_copy(tmp_path, tiny_course_data):
    target = prepare(tiny_course_data, tmp_path / "repo-data", link=True)
    assert (target / "val").is_symlink() and (target / "val" / "0.jpg").is_file()
    prepare(tiny_course_data, target)  # replaces the links with copies
    assert not (target / "val").is_symlink() and (target / "val" / "0.png").is_file()


def test_bad_sources(tmp_path, tiny_course_data):
    with pytest.raises(UserError, match="not found"):
        prepare(tmp_path / "nowhere", tmp_path / "d")
    (tiny_course_data / "fashion" / "fashion_secret_test_data.npy").unlink()
    with pytest.raises(UserError, match="missing fashion/fashion_secret_test_data.npy"):
        prepare(tiny_course_data, tmp_path / "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no classes.txt here or one level down"):
        prepare(tmp_path / "empty", tmp_path / "d")


def test_cloud_drive_copies_are_not_copied(tmp_path, tiny_course_data, capsys):
    add_cloud_drive_copies(tiny_course_data / "train")
    target = prepare(tiny_course_data, tmp_path / "repo-data")
    names = sorted(p.name for p in (target / "train").iterdir())
    assert names == ["0.jpg", "0.png", "1.jpg", "1.png", "2.jpg", "2.png"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "ignored 5 files not named N.jpg/N.png" in warnings[0]
    assert warnings[0].endswith("; not copied")
