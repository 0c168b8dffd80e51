import shutil

import pytest

from common.command import UserError
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


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.parametrize("link", [True, False])
def test_a_source_that_is_the_destination_or_holds_it_is_refused_before_anything_is_touched(tmp_path,
                                                                                            tiny_course_data, link):
    """Neither links the course's files to themselves (--link) nor deletes classes.txt (copy): refused first."""
    before = files_under(tiny_course_data)
    for source, data_dir in ((tiny_course_data, tiny_course_data),  # the same folder
                             (tiny_course_data.parent, tiny_course_data),  # found one level down: data/ itself
                             (tiny_course_data, tiny_course_data / "inner")):  # the destination inside the source
        with pytest.raises(UserError) as error:
            prepare(source, data_dir, link=link)
        assert "are the same folder or one holds the other" in str(error.value) and "\n" not in str(error.value)
        assert files_under(tiny_course_data) == before
    assert not (tiny_course_data / "inner").exists()


def test_a_failed_copy_keeps_the_previous_data(tmp_path, tiny_course_data, monkeypatch):
    target = prepare(tiny_course_data, tmp_path / "repo-data")
    before = files_under(target)

    def broken(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tools.prepare_data.shutil.copyfile", broken)
    with pytest.raises(UserError, match=r"cannot write .*: No space left on device \(the previous data is intact\)"):
        prepare(tiny_course_data, target)
    assert files_under(target) == before  # the old copy stays until a new one is complete


def test_a_damaged_zip_leaves_nothing_unpacked(tmp_path, tiny_course_data):
    archive = shutil.make_archive(str(tmp_path / "data"), "zip", root_dir=tiny_course_data.parent, base_dir="data")
    damaged = tmp_path / "damaged.zip"
    data = bytearray(open(archive, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # a member's bytes garbled: its CRC fails halfway through unpacking
    damaged.write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged.zip: cannot unpack"):
        prepare(damaged, tmp_path / "repo-data")
    assert not (tmp_path / "repo-data" / ".unpacked").exists()
    (tiny_course_data / "classes.txt").unlink()  # a whole zip without the course's files
    incomplete = shutil.make_archive(str(tmp_path / "incomplete"), "zip", root_dir=tiny_course_data.parent,
                                     base_dir="data")
    with pytest.raises(UserError, match="no classes.txt"):
        prepare(incomplete, tmp_path / "repo-data")
    assert not (tmp_path / "repo-data" / ".unpacked").exists()


def test_preparing_a_folder_back_from_its_linked_copy_is_refused(tmp_path, tiny_course_data):
    """B prepared from A with --link, then A from B with --link, emptied A (every entry of B resolves into A)."""
    before = files_under(tiny_course_data)
    linked = prepare(tiny_course_data, tmp_path / "B", link=True)
    for link in (True, False):
        with pytest.raises(UserError, match=r"is a link into --data-dir"):
            prepare(linked, tiny_course_data, link=link)
    assert files_under(tiny_course_data) == before


def test_a_relative_or_symlinked_source_is_compared_where_it_resolves(tmp_path, tiny_course_data, monkeypatch):
    """The same-folder check compares resolved paths: a source given relative to another directory, or through a
    symbolic link, is still the destination."""
    before = files_under(tiny_course_data)
    monkeypatch.chdir(tiny_course_data / "train")
    with pytest.raises(UserError, match="are the same folder or one holds the other"):
        prepare("..", tiny_course_data, link=True)  # relative: ".." is the data folder itself
    alias = tmp_path / "alias"
    alias.symlink_to(tiny_course_data, target_is_directory=True)
    with pytest.raises(UserError, match="are the same folder or one holds the other"):
        prepare(alias, tiny_course_data)
    assert files_under(tiny_course_data) == before


def test_a_loop_of_links_is_refused_in_one_line(tmp_path, tiny_course_data):
    source = tmp_path / "looped"
    shutil.copytree(tiny_course_data, source)
    shutil.rmtree(source / "train")
    (source / "train").symlink_to(source / "train2")
    (source / "train2").symlink_to(source / "train")
    with pytest.raises(UserError, match="is a loop of symbolic links"):
        prepare(source, tmp_path / "d", link=True)


def test_link_without_the_right_to_make_links_copies_and_says_so(tmp_path, tiny_course_data, monkeypatch, capsys):
    """Windows without Developer Mode refuses symlinks (OSError 1314): --link copies instead, with one line."""
    from pathlib import Path

    def refused(self, target, target_is_directory=False):
        raise OSError(1314, "A required privilege is not held by the client")

    monkeypatch.setattr(Path, "symlink_to", refused)
    target = prepare(tiny_course_data, tmp_path / "d", link=True)
    assert not (target / "val").is_symlink() and (target / "val" / "0.png").is_file()
    assert files_under(target) == files_under(tiny_course_data)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: this account cannot make symbolic links in {tmp_path / 'd'} (on Windows: "
                        "Developer Mode is off); copying instead"]


def test_what_it_prints_and_a_second_copy_over_the_first_into_a_new_nested_folder(tmp_path, tiny_course_data, capsys):
    """Each entry is one line, `linked`/`copied SOURCE -> TARGET`; the data folder may be several levels new; a
    copy over an earlier copy replaces it whole."""
    from tools.prepare_data import ENTRIES
    target = tmp_path / "new" / "nested" / "data"
    for link in (True, False, False):
        prepare(tiny_course_data, target, link=link)
        lines = capsys.readouterr().out.splitlines()
        verb = "linked" if link else "copied"
        assert lines == [f"{verb} {tiny_course_data / entry} -> {target / entry}" for entry in ENTRIES]
    assert files_under(target) == files_under(tiny_course_data)
    assert not any(p.name.startswith(".") for p in target.rglob("*"))  # no .new/.old/.link-probe left behind


def test_the_refusals_are_these_lines(tmp_path, tiny_course_data):
    archive = shutil.make_archive(str(tmp_path / "data"), "zip", root_dir=tiny_course_data.parent, base_dir="data")
    with pytest.raises(UserError) as error:
        prepare(archive, tmp_path / "d", link=True)
    assert str(error.value) == "--link needs a folder as --source, not a zip"
    (tmp_path / "plain.txt").write_text("not a zip")
    with pytest.raises(UserError) as error:
        prepare(tmp_path / "plain.txt", tmp_path / "d")
    assert str(error.value) == f"--source {tmp_path / 'plain.txt'}: neither a folder nor a zip file"
    (tiny_course_data / "classes.txt").rename(tiny_course_data / "classes.bak")
    (tiny_course_data / "classes.txt").write_text("")
    shutil.rmtree(tiny_course_data / "val")
    shutil.rmtree(tiny_course_data / "test")
    with pytest.raises(UserError) as error:
        prepare(tiny_course_data, tmp_path / "d")
    assert str(error.value) == f"{tiny_course_data}: missing val, test"
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "classes.txt").symlink_to(tmp_path / "d" / "classes.txt")
    (tmp_path / "d").mkdir(exist_ok=True)
    (tmp_path / "d" / "classes.txt").write_text("")
    with pytest.raises(UserError) as error:
        prepare(linked, tmp_path / "d")
    assert str(error.value) == (f"--source {linked}: {linked / 'classes.txt'} is a link into --data-dir "
                                f"{tmp_path / 'd'} ({tmp_path / 'd' / 'classes.txt'}); give the course's own data "
                                "folder as --source")


def test_the_command_line_prepares_a_folder_and_reports_bad_input_in_one_line(tmp_path, tiny_course_data, capsys):
    from tools.prepare_data import main
    main(["--source", str(tiny_course_data), "--data-dir", str(tmp_path / "d"), "--link"])
    assert capsys.readouterr().out.splitlines()[-1] == f"{tmp_path / 'd'} is ready"
    assert (tmp_path / "d" / "train").is_symlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["--data-dir", str(tmp_path / "d")])
    assert exit_info.value.code == 2 and "--source" in capsys.readouterr().err


def test_the_console_command_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from tools.prepare_data import cli
    monkeypatch.setattr(sys, "argv", ["cs543-prepare-data", "--source", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as exit_info:
        cli()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: --source {tmp_path / 'nowhere'}: not found\n"


def test_an_incomplete_copy_is_caught_before_it_replaces_the_data(tmp_path, tiny_course_data, monkeypatch):
    """Each entry is checked against its source before the swap: a copy that lost a file is refused in one line and
    the previous data stays."""
    import tools.prepare_data as prepare_data
    target = prepare(tiny_course_data, tmp_path / "d")
    before = files_under(target)
    real = prepare_data.copy_split

    def lossy(source, fresh):
        real(source, fresh)
        sorted(fresh.iterdir())[0].unlink()

    monkeypatch.setattr(prepare_data, "copy_split", lossy)
    with pytest.raises(UserError) as error:
        prepare(tiny_course_data, target)
    fresh = target / ".train.new"
    assert str(error.value) == (f"cannot write {target / 'train'}: {fresh} does not match {tiny_course_data / 'train'} "
                                "after copying (the previous data is intact)")
    assert files_under(target) == before and not fresh.exists()


def test_the_help_of_each_console_command_is_the_expected_one(capsys, monkeypatch):
    """What `--help` prints, compared with tests/data/help.txt: the commands' own names and every option with
    its words. CS543_UPDATE_HELP=1 rewrites the file after a deliberate change of wording."""
    from tests.helpers import matches_expected
    from tools import check_submission, prepare_data, report
    monkeypatch.setenv("COLUMNS", "100")
    texts = []
    for module in (prepare_data, check_submission, report):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0
        texts.append(capsys.readouterr().out)
    matches_expected("\n".join(texts), "help.txt", "CS543_UPDATE_HELP")
