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


def test_evaluate_scores_a_known_segmentation_by_hand(tmp_path, monkeypatch):
    """One test image, 4×6, whose two human segmentations are {left, right
    halves} and {one segment}. A method that returns the whole image as one
    segment covers the first with 0.5 (each half: 12 pixels × overlap 12/24)
    and the second with 1.0: best covering 1.0, average covering 0.75."""
    import numpy as np
    import torch
    from PIL import Image

    from matbp.data import write_bsds_seg

    root = tmp_path / "bsds"
    for split, iid in (("train", 11), ("test", 22)):
        (root / "images" / split).mkdir(parents=True)
        Image.fromarray(np.full((4, 6, 3), 128, np.uint8)).save(root / "images" / split / f"{iid}.jpg")
        (root / f"iids_{split}.txt").write_text(f"{iid}\n")
        halves = np.zeros((4, 6), np.int64)
        halves[:, 3:] = 1
        for uid, labels in ((1, halves), (2, np.zeros((4, 6), np.int64))):
            (root / "human" / "color" / str(uid)).mkdir(parents=True, exist_ok=True)
            write_bsds_seg(root / "human" / "color" / str(uid) / f"{iid}.seg", labels, iid, uid)
    monkeypatch.setattr(evaluate, "segment_image",
                        lambda model, image, untrained, ks, seed: [torch.zeros(4, 6, dtype=torch.int64)] * len(ks))
    result = evaluate.main(["ncuts", "--untrained", "--backbone", "small", "--data-root", str(root),
                            "--split", "test", "--out", str(tmp_path / "eval"), "--no-progress"])
    assert result["images"] == 1
    assert result["best_covering_ois"] == 1.0 and result["avg_covering_ois"] == 0.75
    assert result["best_covering_ods"] == 1.0 and result["avg_covering_ods"] == 0.75
