import numpy as np
import pytest

from common.metrics import format_classification
from q1_fashion.data import CLASSES
from tools import check_submission


def softmax_rows(rows, classes=10, seed=0):
    logits = np.random.default_rng(seed).normal(size=(rows, classes))
    return (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)


def check(tmp_path, name, array, *extra):
    path = tmp_path / name
    np.save(path, array)
    return check_submission.main([str(path), *extra])


def test_valid_q1_file_passes(tmp_path, capsys):
    assert check(tmp_path, "Q1_label_predictions.npy", softmax_rows(2000)) == 0
    assert capsys.readouterr().out.startswith("OK ")


@pytest.mark.parametrize("array, message", [
    (softmax_rows(1999), "shape is (1999, 10), expected (2000, 10)"),
    (np.argmax(softmax_rows(2000), axis=1), "shape is (2000,), expected (2000, 10)"),
    (np.full((2000, 10), 0.1, dtype=np.int64), "dtype is int64, expected float32"),
    (np.where(np.arange(10) == 3, np.nan, 0.1)[None].repeat(2000, 0).astype(np.float32), "row 0 holds NaN or inf"),
    (np.random.default_rng(0).random((2000, 10)).astype(np.float32), "rows do not sum to 1"),
    (softmax_rows(2000) - 0.5, "has a negative value"),
])
def test_invalid_q1_files_get_one_line_each(tmp_path, capsys, array, message):
    assert check(tmp_path, "Q1_label_predictions.npy", array) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.startswith("INVALID") for line in lines)
    assert message in lines[0]


def valid_q2_file(items=100, seed=0):
    """uint8 scores whose 6 values per pixel sum to 250, as floored softmax x 255 does (249..255)."""
    scores = np.random.default_rng(seed).integers(0, 50, (items, 6, 224, 224), dtype=np.uint8)
    scores[:, 0] = 250 - scores[:, 1:].sum(axis=1, dtype=np.int32)
    return scores


def test_q2_file_checks(tmp_path, capsys):
    good = valid_q2_file()
    assert check(tmp_path, "Q2_sseg_predictions.npy", good) == 0
    # probabilities saved as floats, not floor(p x 255) as uint8 (float16: the file is half a float32's 120 MB)
    assert check(tmp_path, "Q2_sseg_predictions.npy", good.astype(np.float16)) == 1
    assert "dtype is float16, expected uint8" in capsys.readouterr().out
    broken = good.copy()
    broken[3, :, 5, 7] = 0
    assert check(tmp_path, "Q2_sseg_predictions.npy", broken) == 1
    assert "pixel (image 3, row 5, column 7) sum to 0" in capsys.readouterr().out
    assert check(tmp_path, "Q2_sseg_predictions.npy", good[:99]) == 1


def test_unrecognisable_or_unreadable_files_are_errors(tmp_path, capsys):
    with pytest.raises(check_submission.UserError, match="cannot tell Q1 from Q2"):
        check(tmp_path, "predictions.npy", np.zeros((5, 5)))
    (tmp_path / "Q1_label_predictions.npy").write_text("not numpy")
    with pytest.raises(check_submission.UserError, match=r"Q1_label_predictions.npy: not a .npy file: it starts with "
                                                         r"'not numpy'\.\.\.$"):
        check_submission.main([str(tmp_path / "Q1_label_predictions.npy")])
    saved = np.zeros((2000, 10), np.float32)
    np.save(tmp_path / "truncated.npy", saved)
    (tmp_path / "truncated.npy").write_bytes((tmp_path / "truncated.npy").read_bytes()[:5000])
    with pytest.raises(check_submission.UserError, match="truncated.npy: not a readable .npy file"):
        check_submission.main([str(tmp_path / "truncated.npy")])  # a .npy cut short: np.load's own reason


def test_a_web_page_saved_as_the_prediction_file_is_called_one_not_pickled_data(tmp_path):
    """What a failed Drive or Colab download leaves under the file's name."""
    page = tmp_path / "Q1_label_predictions.npy"
    page.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>")
    with pytest.raises(check_submission.UserError) as error:
        check_submission.main([str(page)])
    assert str(error.value) == (f"{page}: not a .npy file: it starts with '<!DOCTYPE html><'... (a web page: "
                                "download the file again)")
    assert "pickle" not in str(error.value)
    page.write_bytes(b"")
    with pytest.raises(check_submission.UserError, match="not a .npy file: it is empty$"):
        check_submission.main([str(page)])


def test_a_q1_file_of_another_float_type_is_refused_in_one_line(tmp_path, capsys):
    """The assignment asks for float32 softmax probabilities; float64 (np.save of a default numpy array) or float16
    is refused, saying how to save it, rather than handed to an autograder that may compare dtypes."""
    probabilities = softmax_rows(2000, seed=5)
    for dtype in (np.float64, np.float16):
        assert check(tmp_path, "Q1_label_predictions.npy", probabilities.astype(dtype)) == 1
        out = capsys.readouterr().out.splitlines()
        assert out == [f"INVALID {tmp_path / 'Q1_label_predictions.npy'}: dtype is {np.dtype(dtype).name}, expected "
                       "float32 softmax probabilities (save them with .astype(np.float32))"]
    assert check(tmp_path, "Q1_label_predictions.npy", probabilities.astype(np.float32)) == 0


def test_scoring_with_labels_prints_course_format(tmp_path, capsys):
    probabilities = softmax_rows(2000, seed=3)
    labels = np.random.default_rng(4).integers(0, 10, 2000)
    np.save(tmp_path / "labels.npy", labels)
    assert check(tmp_path, "Q1_label_predictions.npy", probabilities, "--labels", str(tmp_path / "labels.npy")) == 0
    predicted = probabilities.argmax(axis=1)
    expected_accuracy = 100 * np.mean(predicted == labels)
    out = capsys.readouterr().out
    assert f"Accuracy of the final network on the test images: {expected_accuracy:.2f} %" in out
    per_class = [100 * np.mean(predicted[labels == c] == c) for c in range(10)]
    assert format_classification(expected_accuracy, per_class, CLASSES, "test") in out


def test_the_split_comes_from_the_shape_not_from_words_in_the_name(tmp_path, capsys):
    # a valid test file whose name happens to contain "val"
    assert check(tmp_path, "Q1_label_predictions_eval.npy", softmax_rows(2000)) == 0
    assert "a valid Q1 test prediction file" in capsys.readouterr().out
    # 5,000 rows under any name: the val split
    assert check(tmp_path, "mine.npy", softmax_rows(5000)) == 0
    assert "a valid Q1 val prediction file" in capsys.readouterr().out
    # Q2 val and test have the same shape: test unless --split val
    assert check(tmp_path, "Q2_sseg_val_predictions.npy", valid_q2_file(seed=1)) == 0
    assert "a valid Q2 test prediction file" in capsys.readouterr().out
    assert check(tmp_path, "whatever.npy", valid_q2_file(seed=1), "--split", "val") == 0
    assert "a valid Q2 val prediction file" in capsys.readouterr().out


def test_scoring_a_test_file_without_labels_is_a_clear_error(tmp_path, course_data):
    with pytest.raises(check_submission.UserError, match="the secret test set has no labels here"):
        check(tmp_path, "Q1_label_predictions.npy", softmax_rows(2000), "--data-dir", str(course_data))
    with pytest.raises(check_submission.UserError, match="the secret test set has no labels here"):
        check(tmp_path, "Q1_x.npy", softmax_rows(5000), "--data-dir", str(course_data), "--split", "test")
    with pytest.raises(check_submission.UserError, match=r"Q2 test split has no labels .*pass --split val"):
        check(tmp_path, "Q2_sseg_val_predictions.npy", valid_q2_file(), "--data-dir", str(course_data))


def test_a_0d_file_with_labels_gets_its_shape_in_one_line(tmp_path, capsys):
    np.save(tmp_path / "labels.npy", np.zeros(5000, dtype=np.int64))
    assert check(tmp_path, "Q1_label_predictions.npy", np.float32(0.5), "--labels", str(tmp_path / "labels.npy")) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("shape is (), expected (2000, 10): one row of 10 class "
                                                 "probabilities per image")


def test_q1_rows_must_sum_to_one_within_a_thousandth(tmp_path, capsys):
    """README: a Q1 file holds softmax probabilities: each row sums to 1 (float32 rounding allowed)."""
    rows = np.full((2000, 10), 0.1, dtype=np.float32)
    rows[7, 0] += 0.0009  # sums to 1.0009: rounding
    assert check(tmp_path, "Q1_label_predictions.npy", rows) == 0
    rows[7, 0] += 0.0011  # 1.002: not a softmax
    assert check(tmp_path, "Q1_label_predictions.npy", rows) == 1
    assert "1 rows do not sum to 1 within 1e-3 (row 7 sums to 1.0020)" in capsys.readouterr().out
    rows[7, 0] = 0.1 - 0.0011
    assert check(tmp_path, "Q1_label_predictions.npy", rows) == 1


@pytest.mark.parametrize("scores, valid", [
    ((255, 0, 0, 0, 0, 0), True),    # a certain pixel: floor(1.0 x 255) = 255, the largest valid sum
    ((250, 5, 0, 0, 0, 0), True),
    ((200, 49, 0, 0, 0, 0), True),   # 249: five scores each floored down by almost 1
    ((200, 48, 0, 0, 0, 0), False),  # 248: more than flooring can lose
    ((255, 1, 0, 0, 0, 0), False),   # 256: more than 255
])
def test_q2_pixel_sums_between_249_and_255_are_valid(tmp_path, capsys, scores, valid):
    """README: Q2 scores are floor(probability x 255): a pixel's six sum to 249..255."""
    array = np.zeros((100, 6, 224, 224), dtype=np.uint8)
    array[:, 0] = 255
    array[3, :, 10, 20] = scores
    assert check(tmp_path, "Q2_sseg_predictions.npy", array) == (0 if valid else 1)
    if not valid:
        assert "pixel (image 3, row 10, column 20)" in capsys.readouterr().out


# Paths a mutation run (mutmut, README "Development") found unguarded in the fast tier.

def test_a_q2_val_file_is_scored_against_the_course_labels_in_the_course_tie_order(tmp_path, capsys, course_data):
    """README: with labels it scores the file exactly like the grader (Q2: --data-dir DATA --split val), ties
    in the course's order. The file is certain and right on every class but sports, whose pixels it gives to
    background and whose scores are all 0, so sports' AP is decided by the order of its ties alone."""
    from common.metrics import course_average_precision
    from q2_segmentation.data import CLASSES as Q2_CLASSES
    from q2_segmentation.data import load_split
    labels = load_split(course_data, "val").labels.numpy()
    shown = np.where(labels == 1, 0, labels)
    scores = np.ascontiguousarray((np.eye(6, dtype=np.uint8)[shown] * 255).transpose(0, 3, 1, 2))
    assert check(tmp_path, "Q2_sseg_val_predictions.npy", scores, "--data-dir", str(course_data), "--split",
                 "val") == 0
    out = capsys.readouterr().out
    for name in Q2_CLASSES[2:]:
        assert f"{name}: AP: 1.00, IoU: 1.00" in out
    # the course's tie order (course_average_precision, checked against the course's rule in test_metrics);
    # numpy's stable order shows another figure here (0.03 against 0.05), so scoring outside the course's order
    # fails this line
    course = course_average_precision(np.zeros(labels.size, dtype=np.uint8), labels == 1)
    assert f"sports: AP: {course:.2f}, IoU: 0.00" in out


def test_a_perfect_q1_val_file_scores_100_against_the_val_labels(tmp_path, capsys, course_data):
    """README: a Q1 file of 5,000 rows predicts val; --data-dir scores it on the last 5,000 training labels."""
    from q1_fashion.data import load_fashion_mnist
    _, labels = load_fashion_mnist(course_data, download=False)
    perfect = np.eye(10, dtype=np.float32)[labels[55_000:].numpy()]
    assert check(tmp_path, "Q1_val_label_predictions.npy", perfect, "--data-dir", str(course_data)) == 0
    assert "Accuracy of the final network on the val images: 100.00 %" in capsys.readouterr().out
    np.save(tmp_path / "labels.npy", labels[55_000:55_010].numpy())
    with pytest.raises(check_submission.UserError, match="labels.npy has 10 labels for 5000 predictions"):
        check(tmp_path, "Q1_val_label_predictions.npy", perfect, "--labels", str(tmp_path / "labels.npy"))


def test_zero_probabilities_are_valid_and_problems_name_their_row(tmp_path, capsys):
    rows = np.zeros((2000, 10), dtype=np.float32)
    rows[:, 0] = 1.0  # certain predictions: nine exact zeros a row
    assert check(tmp_path, "Q1_label_predictions.npy", rows) == 0
    capsys.readouterr()
    rows[5, 3], rows[5, 0] = -0.25, 1.25
    assert check(tmp_path, "Q1_label_predictions.npy", rows) == 1
    assert "row 5 has a negative value" in capsys.readouterr().out
    rows[5], rows[7, 2] = 0.1, np.nan
    assert check(tmp_path, "Q1_label_predictions.npy", rows) == 1
    assert "row 7 holds NaN or inf" in capsys.readouterr().out


def test_a_q2_problem_names_the_first_bad_pixel(tmp_path, capsys):
    array = np.zeros((100, 6, 224, 224), dtype=np.uint8)
    array[:, 0] = 255
    array[1, :, 0, 0] = (200, 49, 0, 0, 0, 0)  # 249: valid, and earlier than the bad pixel
    array[3, :, 10, 20] = (200, 48, 0, 0, 0, 0)  # 248
    assert check(tmp_path, "Q2_sseg_predictions.npy", array) == 1
    assert "pixel (image 3, row 10, column 20) sum to 248" in capsys.readouterr().out


def test_messages_for_files_that_cannot_be_checked(tmp_path, capsys):
    with pytest.raises(check_submission.UserError, match=r"missing.npy: file not found"):
        check_submission.main([str(tmp_path / "missing.npy")])
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(check_submission.UserError) as error:
        check_submission.main([str(tmp_path / "objects.npy")])  # never unpickled
    assert str(error.value) == (f"{tmp_path / 'objects.npy'}: the .npy file holds Python objects (dtype object), not "
                                "numbers; save the predictions as a NumPy array of numbers (Q1 float32, Q2 uint8)")
    assert check(tmp_path, "Q2_odd.npy", np.zeros(5, np.uint8)) == 1  # named Q2: checked as Q2
    assert "expected (100, 6, 224, 224)" in capsys.readouterr().out
    np.save(tmp_path / "labels.npy", np.zeros(100, np.int64))
    with pytest.raises(check_submission.UserError, match="^--labels is for Q1; score a Q2 file with --data-dir DATA "
                                                         "--split val$"):
        check(tmp_path, "Q2_sseg_predictions.npy", np.zeros((100, 6, 224, 224), np.uint8), "--labels",
              str(tmp_path / "labels.npy"))
    with pytest.raises(check_submission.UserError, match=r"test split has no labels here .* \(pass --split val for "
                                                         r"a val file\)$"):
        check(tmp_path, "Q2_sseg_predictions.npy", np.zeros((100, 6, 224, 224), np.uint8), "--data-dir", "data")


def test_the_usage_line_names_the_command(capsys):
    with pytest.raises(SystemExit):
        check_submission.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: cs543-check [-h] [--labels LABELS] [--data-dir DATA_DIR]")
    assert "[--split {test,val}]" in out and "the .npy prediction file" in out
    assert "\n    cs543-check FILE --labels labels.npy          # Q1, any labelled set\n" in out  # laid out as written


def test_a_0d_q2_file_gets_the_q2_shape(tmp_path, capsys):
    assert check(tmp_path, "Q2_sseg_predictions.npy", np.uint8(3)) == 1
    assert "shape is (), expected (100, 6, 224, 224)" in capsys.readouterr().out
