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
