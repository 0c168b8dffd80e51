from q1_fashion import ablate as q1_ablate
from q2_segmentation import ablate as q2_ablate


def test_q1_ablation_ladder_writes_table_and_chart(tmp_path, course_data):
    q1_ablate.main(["--epochs", "1", "--limit", "600", "--data-dir", str(course_data),
                    "--results-dir", str(tmp_path / "r"), "--checkpoints-dir", str(tmp_path / "c")])
    table = (tmp_path / "r" / "ablation.md").read_text().splitlines()
    assert table[0] == "| component | params | epochs | val accuracy (%) |"
    components = [line.split("|")[1].strip() for line in table[2:]]
    assert components == ["baseline (BaseNet)", "+ augmentation", "+ BatchNorm", "+ dropout", "+ depth",
                          "+ width (= improved)"]
    params = [int(line.split("|")[2].replace(",", "")) for line in table[2:]]
    assert params[0] == 4414 and params[-1] == 164_778
    assert (tmp_path / "r" / "ablation.png").stat().st_size > 0


def test_q2_ablation_ladder_on_tiny_data(tmp_path, tiny_course_data):
    q2_ablate.main(["--backbone", "efficientnet_lite0", "--epochs", "1", "--data-dir", str(tiny_course_data),
                    "--results-dir", str(tmp_path / "r"), "--checkpoints-dir", str(tmp_path / "c")])
    table = (tmp_path / "r" / "ablation.md").read_text().splitlines()
    assert table[0] == "| component | params | epochs | val mAP | val mIoU |"
    assert len(table) == 2 + 5
    assert table[-1].startswith("| + stepwise upsampling (= report_best) |")
