"""One rule for an evaluation split's classes.json and labels, read by `jestflow data check` and by
evaluation alike (data/classes.py): a split the check passes is one evaluation accepts."""

import json

import numpy as np
import pytest

from jestflow.data.check import check_split
from jestflow.data.shards import ShardWriter
from jestflow.training.evaluation import EvalSet


def _split(folder, classes_json, labels=(0, 1, 2, 1)):
    with ShardWriter(str(folder), "e", 100) as w:
        for i, label in enumerate(labels):
            w.write(f"e{i}", np.full((8, 8, 3), 40 * i, np.uint8), f"a photo {i}", {"label": label})
    if classes_json is not None:
        (folder / "classes.json").write_text(json.dumps(classes_json))
    return str(folder)


CASES = [
    pytest.param({"classes": ["a", "b", "c"], "templates": ["a {}"]}, None, id="fine"),
    pytest.param({"classes": ["a", "b", "c"]}, "needs non-empty 'classes' and 'templates'", id="no-templates"),
    pytest.param({"classes": ["a", "b", "c"], "templates": ["a photo"]}, "needs a '{}' placeholder", id="no-slot"),
    pytest.param({"classes": [], "templates": ["a {}"]}, "needs non-empty", id="no-classes"),
    pytest.param(["a", "b"], "needs non-empty", id="a-list"),
    pytest.param({"classes": ["a", "b"], "templates": ["a {}"]}, "label 2 is not a class index", id="label-too-big"),
]


@pytest.mark.parametrize("classes_json,error", CASES)
def test_data_check_and_evaluation_judge_classes_alike(tmp_path, classes_json, error):
    """Was: `data check` passed a classes.json without templates, or with a template without `{}`, that
    evaluation then refused."""
    split = _split(tmp_path, classes_json)
    problems = check_split(split).problems
    if error is None:
        assert problems == []
        assert EvalSet.load(split, 8).classes == ["a", "b", "c"]
        return
    assert any(error in p for p in problems), problems
    with pytest.raises(ValueError, match=error.replace("{}", r"\{\}")):
        EvalSet.load(split, 8)


def test_a_split_with_classes_but_no_labeled_sample_has_no_zero_shot_score(tmp_path):
    """Issue 27: zero-shot top-1 of a split none of whose samples has a label was NaN, and a bare NaN in
    the JSON written; now it is None (null), and the report says n/a."""
    import torch

    from jestflow import storage
    from jestflow.config import ModelConfig
    from jestflow.model.tokenizer import Tokenizer
    from jestflow.model.two_tower import TwoTower
    from jestflow.reporting.run_report import table
    from jestflow.training.evaluation import evaluate

    with ShardWriter(str(tmp_path), "e", 100) as w:
        for i in range(6):
            w.write(f"e{i}", np.full((8, 8, 3), 40 * i, np.uint8), f"a photo {i}", {"noise": "clean"})
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["a", "b"], "templates": ["a {}"]}))
    ev = EvalSet.load(str(tmp_path), 32)
    torch.manual_seed(0)
    out = evaluate(TwoTower(ModelConfig(), 30), Tokenizer.build(["a photo", "a b"], 16), ev, 8, "cpu")
    assert out["zeroshot_top1"] is None and 0 <= out["retrieval_r1"] <= 1
    storage.write_json(str(tmp_path / "r.json"), out)
    assert '"zeroshot_top1": null' in (tmp_path / "r.json").read_text()
    row = {"run": "x", "method": "uniform", "zeroshot_top1": None, "retrieval_r1": 0.5, "iterations": 1,
           "total_flops": 1.0, "clean_fraction": 1.0, "wall_seconds": 1.0}  # fmt: skip
    assert "| x | uniform | n/a | 0.500 |" in table([row])
