"""DeepNCuts end to end on a tiny BSDS300-layout folder: the training
command, the evaluation command, and their clear errors."""

import json

import pytest

from matbp import evaluate, train
from matbp.data import make_mosaics


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory):
    root = tmp_path_factory.mktemp("mosaics") / "bsds"
    return str(make_mosaics(str(root), seed=3, num_train=4, num_test=2, size=(48, 64)))


def test_train_and_evaluate_ncuts(tmp_path, mosaics):
    out = tmp_path / "run"
    summary = train.main(["ncuts", "--data", "bsds300", "--data-root", mosaics, "--backbone", "small",
                          "--epochs", "2", "--lr", "0.01", "--out", str(out), "--device", "cpu", "--no-progress"])
    for key in ("final_objective", "final_rank", "nonfinite_steps", "images_per_s"):
        assert key in summary, key
    assert summary["nonfinite_steps"] == 0 and 1 <= summary["final_rank"] <= 20
    for name in ("last.pt", "best.pt", "log.csv", "steps.csv", "summary.json", "curves.png"):
        assert (out / name).is_file(), name
    steps = (out / "steps.csv").read_text().splitlines()
    assert "rank" in steps[0] and "objective" in steps[0] and len(steps) == 1 + 2 * 4

    result = evaluate.main(["ncuts", "--checkpoint", str(out / "last.pt"), "--data-root", mosaics,
                            "--split", "test", "--out", str(tmp_path / "eval"), "--no-progress"])
    with open(tmp_path / "eval" / "summary.json") as f:
        on_disk = json.load(f)
    assert on_disk["images"] == 2 == result["images"]
    for key in ("best_covering_ois", "avg_covering_ois", "best_covering_ods", "avg_covering_ods"):
        assert 0.0 < on_disk[key] <= 1.0, key
    assert on_disk["best_covering_ois"] >= on_disk["avg_covering_ois"]
    assert (tmp_path / "eval" / "panel.png").is_file() and (tmp_path / "eval" / "covering.md").is_file()

    base = evaluate.main(["ncuts", "--untrained", "--backbone", "small", "--data-root", mosaics, "--split", "test",
                          "--out", str(tmp_path / "base"), "--no-progress"])
    assert base["method"].startswith("NCuts on small features")


def test_ncuts_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["ncuts", "--data", "bsds300", "--backbone", "small", "--epochs", "1", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--data-root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["ncuts", "--data", "bsds300", "--data-root", str(tmp_path / "missing"), "--backbone", "small",
                    "--epochs", "1", "--out", str(tmp_path / "run")])
    assert "expected a BSDS300 folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["ncuts", "--checkpoint", str(tmp_path / "none.pt"), "--data-root", str(tmp_path),
                       "--out", str(tmp_path / "eval")])
    assert "no such file" in capsys.readouterr().err


def test_table2_command(tmp_path, mosaics):
    from matbp import experiments

    table = experiments.main(["table2", "--out", str(tmp_path), "--data-root", mosaics, "--epochs", "1",
                              "--no-progress"])
    assert [r["method"] for r in table["rows"]] == ["NCuts", "DeepNCuts"]
    for name in ("table2.md", "table2.json", "table2_panel.png"):
        assert (tmp_path / name).is_file(), name
    assert table["training"]["nonfinite_steps"] == 0
