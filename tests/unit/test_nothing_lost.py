"""Issue 16: inputs that used to lose or mix up data with exit code 0. Each case now fails naming the
shard, uid or file, or redoes the work, and each test failed on the main before the fix (noted)."""

import json
import shutil

import numpy as np
import pytest

from cli import smoke_args
from jestflow.cli import main
from shards import members, write_tar


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def scored_copy(smoke_scored, tmp_path):
    """A private pool and score cache (the shared ones must stay as they are)."""
    shutil.copytree(smoke_scored / "data" / "pool", tmp_path / "pool")
    shutil.copytree(smoke_scored / "scores", tmp_path / "scores")
    return tmp_path


def _score(ref, pool, out, *sets):
    return main(smoke_args("score", *sets, reference=ref, data=pool, out=out))


def test_rescoring_a_changed_shard_does_not_reuse_its_stale_scores(smoke_scored, scored_copy, capsys):
    """Was: re-running `score` into the same folder reused every .npz there and wrote the new shard
    fingerprints into index.json, so the advice "score the pool again" gave `train` stale scores."""
    pool, scores = scored_copy / "pool", scored_copy / "scores"
    shard = sorted(pool.glob("*.tar"))[0]
    write_tar(shard, members(shard)[:-6])  # two samples fewer (3 members each): the pool changed after scoring
    assert _score(smoke_scored / "ref", pool, scores) == 0
    index = json.loads((scores / "index.json").read_text())
    entry = next(e for e in index["shards"] if e["shard"] == shard.name)
    stored = _npz(scores / entry["file"])
    assert entry["n"] == len(stored["uids"]) == len({name.split(".")[0] for name, _ in members(shard)}) == 198
    assert index["n"] == sum(len(_npz(scores / e["file"])["uids"]) for e in index["shards"])
    args = smoke_args("train", "learner.steps=2", "learner.eval_every=0", method="jest", data=pool, scores=scores)
    assert main([*args, "--out", str(scored_copy / "t")]) == 0


def _edit_a_caption_in_place(shard) -> str:
    """Overwrite, byte for byte, the caption of the shard's middle sample (same size, tar headers and
    both 64 KiB ends untouched, as a fix-up script editing captions in place would leave it); its uid."""
    import tarfile

    with tarfile.open(shard) as t:
        txt = [m for m in t.getmembers() if m.name.endswith(".txt")]
        m = txt[len(txt) // 2]
        old = t.extractfile(m).read()
    assert shard.stat().st_size > 4 * 65536 and 65536 < m.offset_data < shard.stat().st_size - 65536
    new = bytes(ord("x") if c != ord(" ") else c for c in old)  # "xxxxx xx xxxx": same length, another caption
    with open(shard, "r+b") as f:
        f.seek(m.offset_data)
        f.write(new)
    return m.name.split(".")[0]


def test_a_caption_edited_in_place_mid_shard_is_seen_and_rescored(smoke_scored, scored_copy, capsys):
    """Issue 27 (1). Was: the fingerprint hashed a shard's first and last 64 KiB and its size, so this edit
    went unseen: `train` used the old scores and `score` reused them. Now fingerprints are a CRC32C of every
    byte (made on the scoring read itself), and both see it."""
    pool, scores = scored_copy / "pool", scored_copy / "scores"
    shard = sorted(pool.glob("*.tar"))[1]
    size = shard.stat().st_size
    uid = _edit_a_caption_in_place(shard)
    assert shard.stat().st_size == size
    args = smoke_args("train", "learner.steps=2", "learner.eval_every=0", method="jest", data=pool, scores=scores)
    assert main([*args, "--out", str(scored_copy / "t")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"shard {shard.name} changed since it was scored" in err, err
    before = {p.name: (p.stat().st_mtime_ns, _npz(p)) for p in scores.glob("*.npz")}
    assert _score(smoke_scored / "ref", pool, scores) == 0
    index = json.loads((scores / "index.json").read_text())
    for e in index["shards"]:
        stamp, old = before[e["file"]]
        now = _npz(scores / e["file"])
        if e["shard"] != shard.name:
            assert (scores / e["file"]).stat().st_mtime_ns == stamp  # the other shards' scores are reused
            continue
        i = list(now["uids"]).index(uid)
        assert now["loss"][i] != old["loss"][i]  # the edited caption was embedded and scored again
        assert str(now["shard_fingerprint"]) == e["fingerprint"] != str(old["shard_fingerprint"])
    assert main([*args, "--out", str(scored_copy / "t")]) == 0


def test_a_fingerprint_made_while_reading_equals_the_stores(tmp_path):
    """What scoring hashes on its read (plain and gzip shards) is what `storage.fingerprint` reads again,
    and what GCS keeps for the same bytes: base64 of the big-endian CRC32C (the value of
    `crc32c("123456789") = 0xE3069283`, the check value in RFC 3720's CRC32C)."""
    import gzip

    from jestflow import storage
    from jestflow.data.shards import ReadStats, iter_shard
    from shards import tiny_split

    tiny_split(tmp_path / "split", shards=1, per_shard=30)
    plain = next((tmp_path / "split").glob("*.tar"))
    gz = tmp_path / "g.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes() + b"\0" * 4096))  # with trailing padding past the tar
    for shard in (plain, gz):
        crc = storage.Crc32c()
        assert len(list(iter_shard(str(shard), ReadStats(), crc=crc))) == 30
        assert crc.fingerprint() == storage.fingerprint(str(shard))
    (tmp_path / "check").write_bytes(b"123456789")
    assert storage.fingerprint(str(tmp_path / "check")) == "crc32c:4waSgw=="


def test_rescoring_with_another_reference_rescores_every_shard(smoke_scored, scored_copy):
    """Was: with a different --reference the old embeddings stayed while index.json named the new model."""
    ref2 = scored_copy / "ref2"
    curated = smoke_scored / "data" / "curated"
    assert main(smoke_args("train-reference", "reference.steps=2", data=curated, out=ref2)) == 0
    before = {p.name: _npz(p)["img"] for p in (scored_copy / "scores").glob("*.npz")}
    assert _score(ref2, scored_copy / "pool", scored_copy / "scores") == 0
    for name, old in before.items():
        new = _npz(scored_copy / "scores" / name)
        assert not np.array_equal(new["img"], old), name  # made by ref2 now
        assert str(new["reference_id"]).startswith("crc32c:")  # and says by which weights
    # The same reference again: nothing to redo, the files are reused as they are.
    stamp = {p.name: p.stat().st_mtime_ns for p in (scored_copy / "scores").glob("*.npz")}
    assert _score(ref2, scored_copy / "pool", scored_copy / "scores") == 0
    assert stamp == {p.name: p.stat().st_mtime_ns for p in (scored_copy / "scores").glob("*.npz")}


def test_duplicate_uids_across_shards_fail_while_scoring(smoke_scored, scored_copy, capsys):
    """Was: they passed `score` and failed only at `train`, after the scoring compute was spent."""
    pool = scored_copy / "pool"
    a, b = sorted(pool.glob("*.tar"))[:2]
    stolen = members(a)[:3]  # one sample (image, caption, metadata) of shard a, copied into shard b
    write_tar(b, members(b) + stolen)
    out = scored_copy / "fresh"
    assert _score(smoke_scored / "ref", pool, out) == 2
    err = capsys.readouterr().err
    uid = stolen[0][0].split(".")[0]
    assert f"duplicate uid '{uid}' in pool shards {a.name} and {b.name}" in err
    assert not (out / "index.json").exists()


def test_a_truncated_score_file_is_one_line_and_rescored(smoke_scored, scored_copy, capsys):
    """Was: a BadZipFile traceback."""
    npz = sorted((scored_copy / "scores").glob("*.npz"))[0]
    npz.write_bytes(npz.read_bytes()[:300])
    args = smoke_args("train", "learner.steps=2", "learner.eval_every=0", method="jest")
    run = [*args, "--data", str(scored_copy / "pool"), "--scores", str(scored_copy / "scores")]
    assert main([*run, "--out", str(scored_copy / "t")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{npz}: unreadable score shard (BadZipFile" in err
    assert _score(smoke_scored / "ref", scored_copy / "pool", scored_copy / "scores") == 0  # resumes: rescored
    assert len(_npz(npz)["uids"]) > 0


def _eval_copy(smoke_scored, tmp_path, label_of):
    ev = tmp_path / "eval"
    shutil.copytree(smoke_scored / "data" / "eval", ev)
    shard = sorted(ev.glob("*.tar"))[0]
    items = []
    for name, data in members(shard):
        if name.endswith(".json"):
            meta = json.loads(data)
            meta["label"] = label_of(meta["label"])
            data = json.dumps(meta).encode()
        items.append((name, data))
    write_tar(shard, items)
    return ev


@pytest.mark.parametrize(
    "label_of,message",
    [
        (lambda k: 99, "label 99 is not a class index of"),
        (lambda k: -2, "label -2 is not a class index"),
        (lambda k: str(k), "is not an integer class index"),
        (lambda k: k + 0.5, "is not an integer class index"),
        (lambda k: True, "label True is not an integer class index"),
    ],
)
def test_evaluation_labels_are_checked_against_classes(smoke_scored, tmp_path, capsys, label_of, message):
    """Was: labels of 99, -2, "3" or 2.5 gave a wrong zero-shot accuracy with exit code 0."""
    ev = _eval_copy(smoke_scored, tmp_path, label_of)
    args = smoke_args("evaluate", model=smoke_scored / "ref", data=ev, out=tmp_path / "r.json")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "evaluation sample " in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def test_fewer_classes_than_labels_fail(smoke_scored, tmp_path, capsys):
    ev = _eval_copy(smoke_scored, tmp_path, lambda k: k)
    cj = json.loads((ev / "classes.json").read_text())
    (ev / "classes.json").write_text(json.dumps({**cj, "classes": cj["classes"][:3]}))
    assert main(smoke_args("evaluate", model=smoke_scored / "ref", data=ev, out=tmp_path / "r.json")) == 2
    assert "(3 classes: 0..2)" in capsys.readouterr().err


def test_an_eval_split_without_classes_says_zero_shot_is_skipped(smoke_scored, tmp_path, caplog):
    ev = _eval_copy(smoke_scored, tmp_path, lambda k: k)
    (ev / "classes.json").unlink()
    assert main(smoke_args("evaluate", model=smoke_scored / "ref", data=ev, out=tmp_path / "r.json")) == 0
    assert "no classes.json: zero-shot classification is skipped" in caplog.text
    assert "zeroshot_top1" not in json.loads((tmp_path / "r.json").read_text())


def test_another_method_into_a_finished_run_leaves_its_config_alone(smoke_scored, tmp_path, capsys):
    """Was: the run was refused, correctly, but only after its config.yaml had been rewritten."""
    pool, scores, out = smoke_scored / "data" / "pool", smoke_scored / "scores", tmp_path / "run"
    sets = ("learner.steps=2", "learner.eval_every=0")
    assert main(smoke_args("train", *sets, method="jest", data=pool, scores=scores, out=out)) == 0
    before = (out / "config.yaml").read_text()
    assert main(smoke_args("train", *sets, method="uniform", data=pool, scores=scores, out=out)) == 2
    assert "holds a run made with another configuration" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == before


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    """Issue 16: was a NotADirectoryError traceback."""
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    assert main(["data", "demo", *smoke_args("x", out=blocker / "demo")[1:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"jestflow: error: {blocker / 'demo' / 'curated'}: Not a directory"


def test_out_in_a_read_only_folder_is_one_line(tmp_path, capsys):
    import os

    try:  # sysfs is read-only even for root (file modes are not, on these machines)
        os.mkdir("/sys/jestflow-probe")
        os.rmdir("/sys/jestflow-probe")
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    assert main(["data", "demo", *smoke_args("x", out="/sys/jestflow-out")[1:]]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("jestflow: error: /sys/jestflow-out")


def test_oversized_images_are_skipped_under_their_own_reason_without_decoding(tmp_path, monkeypatch):
    """Issue 16: a 12,000² PNG cost 1.4 GB and printed PIL's DecompressionBombWarning; a 20,000² one was
    skipped as "undecodable". Now the size is read from the header and checked against
    $JESTFLOW_MAX_IMAGE_PIXELS (default 36 MP) before anything is decoded."""
    import io
    import warnings

    from PIL import Image

    from jestflow.data.shards import ReadStats, iter_shard

    def png(side):
        buf = io.BytesIO()
        Image.new("RGB", (side, side), (200, 10, 10)).save(buf, format="PNG")
        return buf.getvalue()

    big = png(8_000)  # 64 MP, a few hundred kB compressed: decoding it would take 192 MB
    items = [("a.png", png(16)), ("a.txt", b"small"), ("b.png", big), ("b.txt", b"huge")]
    write_tar(tmp_path / "s.tar", items)
    stats = ReadStats(max_bad_fraction=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning
        got = [x.uid for x in iter_shard(str(tmp_path / "s.tar"), stats)]
    assert got == ["a"] and stats.skipped == {"image-too-large": 1}
    monkeypatch.setenv("JESTFLOW_MAX_IMAGE_PIXELS", "100")  # configurable: now the 16² one is too large too
    stats = ReadStats(max_bad_fraction=1.0)
    assert list(iter_shard(str(tmp_path / "s.tar"), stats)) == [] and stats.skipped == {"image-too-large": 2}


def test_data_check_reports_what_would_fail_or_lose_data(smoke_scored, tmp_path, capsys):
    """`jestflow data check`: fine splits pass; a truncated shard (named, with the offset), a duplicate
    uid across shards and an out-of-range label each make it exit 1 and are named."""
    data = smoke_scored / "data"
    assert main(["data", "check", str(data / "pool"), str(data / "eval"), "--preset", "smoke"]) == 0
    out = capsys.readouterr().out
    assert f"{data / 'pool'}: 8 shards, 1600 samples read" in out and "2 of 2 splits fine" in out
    pool = tmp_path / "pool"
    shutil.copytree(data / "pool", pool)
    a, b, c = sorted(pool.glob("*.tar"))[:3]
    write_tar(b, members(b) + members(a)[:3])  # a uid of shard a again in shard b
    c.write_bytes(c.read_bytes()[:40_000])
    ev = _eval_copy(smoke_scored, tmp_path, lambda k: 12)
    assert main(["data", "check", str(pool), str(ev), "--preset", "smoke"]) == 1
    out = capsys.readouterr().out
    uid = members(a)[0][0].split(".")[0]
    assert f"PROBLEM: duplicate uid '{uid}' in shards {a.name} and {b.name}" in out
    assert f"PROBLEM: {c}: truncated tar:" in out and "byte" in out
    assert "PROBLEM: eval-00000.tar: evaluation sample" in out and "label 12 is not a class index" in out
    assert "0 of 2 splits fine; 2 with problems" in out
