"""Issue 27 (2): one bad-sample rule (`shards.judge_bad`) for `data check` and every stage. Was: `data
check` judged the whole split while the stages judged a running count once 100 samples were read, so
`evaluate` dropped 30 of 90 samples with exit code 0, `score` passed a split of nothing but bad samples
("scored 0 pool samples") and failed one `data check` passed ("too many bad samples: 2 of 166").

The property: over random splits of good and bad samples (undecodable images, empty and missing
captions) spread over shards of random sizes, `data check`, `score` (and a second `score` that reuses
the score files), `train` (one pass and more over the split) and `evaluate` all pass or all fail, and
exactly when the rule says so."""

import io
import random
import tarfile

import numpy as np
import pytest
from PIL import Image

from cli import smoke_args
from jestflow.cli import main

F = 0.1  # max_bad_fraction of every case (both sections: data check judges with the reference's)
SETS = (f"reference.max_bad_fraction={F}", f"learner.max_bad_fraction={F}")


def _png(rng) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _split(folder, good: int, bad: int, seed: int) -> None:
    """`good` + `bad` samples in shuffled order over shards of random sizes; bad ones of three kinds."""
    rng, r = np.random.default_rng(seed), random.Random(seed)
    kinds = ["good"] * good + [r.choice(["undecodable", "empty-caption", "no-caption"]) for _ in range(bad)]
    r.shuffle(kinds)
    folder.mkdir(parents=True)
    i, shard = 0, 0
    while i < len(kinds):
        size = r.randint(1, max(1, len(kinds) // 2))
        with tarfile.open(folder / f"s-{shard:05d}.tar", "w") as tar:
            for k, kind in enumerate(kinds[i : i + size], i):
                members = [(f"u{k:05d}.png", b"not a png" if kind == "undecodable" else _png(rng))]
                if kind != "no-caption":
                    members.append((f"u{k:05d}.txt", b"" if kind == "empty-caption" else f"a photo {k % 7}".encode()))
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        i, shard = i + size, shard + 1


def _expected(good: int, bad: int) -> bool:
    return good > 0 and bad / (good + bad) <= F


# (good, bad): the edges by hand (none bad; all bad; at the threshold exactly; one over it; a single
# sample), then random mixes around the threshold.
_r = random.Random(27)
CASES = [(40, 0), (0, 12), (36, 4), (35, 4), (1, 0), (9, 1)] + [
    (g, round(g * _r.uniform(0.0, 0.25))) for g in (_r.randint(5, 60) for _ in range(6))
]


@pytest.mark.parametrize("good,bad", CASES, ids=[f"{g}good-{b}bad" for g, b in CASES])
def test_check_score_train_and_evaluate_agree_with_the_rule(smoke_scored, tmp_path, capsys, good, bad):
    split = tmp_path / "split"
    _split(split, good, bad, seed=good * 1000 + bad)
    ref = smoke_scored / "ref"
    verdicts = {
        "data check": main(["data", "check", str(split), *smoke_args("x", *SETS)[1:]]) == 0,
        "score": main(smoke_args("score", *SETS, reference=ref, data=split, out=tmp_path / "scores")) == 0,
        "evaluate": main(smoke_args("evaluate", *SETS, model=ref, data=split, out=tmp_path / "ev.json")) == 0,
    }
    # scoring again into the same folder reuses the shards' score files, and judges them the same
    again = main(smoke_args("score", *SETS, reference=ref, data=split, out=tmp_path / "scores")) == 0
    assert again == verdicts["score"]
    steps = (good + 3) // 4 + 2  # batches of 4: past the end of the first pass, into the second
    train = ("learner.batch_size=4", f"learner.steps={steps}", "learner.eval_every=0", "learner.shuffle_buffer=8")
    verdicts["train"] = main(smoke_args("train", *SETS, *train, method="uniform", data=split, out=tmp_path / "t")) == 0
    err = capsys.readouterr().err
    want = _expected(good, bad)
    assert verdicts == dict.fromkeys(verdicts, want), (verdicts, err[-2000:])
    if not want:  # each stage that refused said why, in one line naming the split
        refusals = [ln for ln in err.splitlines() if "no usable samples" in ln or "samples are bad" in ln]
        assert len(refusals) >= 3, err[-2000:]
