import io

import numpy as np
import pytest

from jestflow.data.shards import ReadStats, ShardWriter, iter_shard, iter_split, stream
from shards import write_tar


def write_split(folder, n=30, shard_size=10, prefix="s"):
    rng = np.random.default_rng(0)
    with ShardWriter(str(folder), prefix, shard_size) as w:
        for i in range(n):
            w.write(
                f"{prefix}{i:04d}",
                rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
                f"caption {i}",
                {"label": i % 3, "noise": "clean"},
            )
    return folder


def png_bytes():
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_round_trip(tmp_path):
    write_split(tmp_path)
    samples = list(iter_split(str(tmp_path)))
    assert [s.uid for s in samples] == [f"s{i:04d}" for i in range(30)]
    assert samples[7].caption == "caption 7" and samples[7].meta == {"label": 1, "noise": "clean"}
    assert samples[0].image.shape == (8, 8, 3) and samples[0].image.dtype == np.uint8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s-00000.tar", "s-00001.tar", "s-00002.tar"]


def test_resize_on_read(tmp_path):
    write_split(tmp_path, n=3)
    assert next(iter_split(str(tmp_path), image_size=16)).image.shape == (16, 16, 3)


def test_stream_is_deterministic_and_covers_every_sample(tmp_path):
    write_split(tmp_path, n=40, shard_size=7)
    a = [s.uid for s in stream(str(tmp_path), seed=3, shuffle_buffer=5, epochs=1)]
    b = [s.uid for s in stream(str(tmp_path), seed=3, shuffle_buffer=5, epochs=1)]
    c = [s.uid for s in stream(str(tmp_path), seed=4, shuffle_buffer=5, epochs=1)]
    assert a == b and a != c
    assert sorted(a) == [f"s{i:04d}" for i in range(40)]
    assert a != sorted(a)


def test_a_stream_without_a_shuffle_buffer_keeps_each_shards_order(tmp_path):
    """shuffle_buffer=0 (issue 27: "empty range for randrange()"): shards in shuffled order, each read as
    written, every sample once per epoch."""
    write_split(tmp_path, n=40, shard_size=10)
    a = [s.uid for s in stream(str(tmp_path), seed=3, shuffle_buffer=0, epochs=2)]
    assert len(a) == 80 and sorted(a[:40]) == [f"s{i:04d}" for i in range(40)]
    for k in range(0, 80, 10):  # each run of 10 is one shard, in order
        first = int(a[k][1:])
        assert first % 10 == 0 and a[k : k + 10] == [f"s{i:04d}" for i in range(first, first + 10)]


def test_stream_holds_only_a_bounded_buffer(tmp_path):
    """The shuffled stream yields samples before it has read the whole split."""
    write_split(tmp_path, n=50, shard_size=10)
    import jestflow.data.shards as data

    opened = []
    orig = data.iter_shard
    data.iter_shard = lambda shard, *a, **k: (opened.append(shard), orig(shard, *a, **k))[1]
    try:
        it = stream(str(tmp_path), seed=0, shuffle_buffer=4)
        next(it)
    finally:
        data.iter_shard = orig
    assert len(opened) == 1


@pytest.mark.parametrize(
    "members,reason",
    [
        pytest.param([("a.png", b"not a png"), ("a.txt", b"hello")], "undecodable-image", id="undecodable-image"),
        pytest.param([("a.png", "PNG"), ("a.txt", b"   ")], "empty-caption", id="empty-caption"),
        pytest.param([("a.png", "PNG")], "missing-caption", id="missing-caption"),
        pytest.param([("a.txt", b"x")], "missing-image", id="missing-image"),
        pytest.param([("a.png", "PNG"), ("a.txt", b"x" * 5000)], "caption-too-long", id="caption-too-long"),
        pytest.param([("a.png", "PNG"), ("a.txt", b"\xff\xfe")], "caption-not-utf8", id="caption-not-utf8"),
        pytest.param([("a.png", "PNG"), ("a.txt", b"ok"), ("a.json", b"{nope")], "bad-json", id="bad-json"),
    ],
)
def test_bad_samples_are_skipped_and_counted(tmp_path, members, reason):
    members = [(n, png_bytes() if d == "PNG" else d) for n, d in members]
    good = [("b.png", png_bytes()), ("b.txt", b"fine")]
    write_tar(tmp_path / "x.tar", members + good)
    stats = ReadStats(max_bad_fraction=1.0)
    assert [s.uid for s in iter_shard(str(tmp_path / "x.tar"), stats)] == ["b"]
    assert stats.skipped == {reason: 1} and stats.samples == 1


@pytest.mark.parametrize("name", ["/etc/a.png", "../a.png", "x/../../a.png"])
def test_unsafe_member_names_are_refused(tmp_path, name):
    write_tar(tmp_path / "x.tar", [(name, png_bytes())])
    with pytest.raises(ValueError, match="unsafe tar member"):
        list(iter_shard(str(tmp_path / "x.tar")))


def test_duplicate_uid_names_file_and_uid(tmp_path):
    write_tar(tmp_path / "x.tar", [("a.png", png_bytes()), ("a.txt", b"1"), ("b.txt", b"2"), ("a.png", png_bytes())])
    with pytest.raises(ValueError, match=r"x\.tar: duplicate uid 'a'"):
        list(iter_shard(str(tmp_path / "x.tar"), ReadStats(max_bad_fraction=1.0)))


def test_truncated_tar_names_the_file(tmp_path):
    write_split(tmp_path, n=10, shard_size=10)
    shard = tmp_path / "s-00000.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(ValueError, match=r"s-00000\.tar: truncated tar: the stream ends at byte 3000"):
        list(iter_shard(str(shard)))


def test_too_many_bad_samples_fail_loudly(tmp_path):
    members = []
    for i in range(120):
        members += [(f"u{i}.png", png_bytes() if i % 2 else b"junk"), (f"u{i}.txt", b"c")]
    write_tar(tmp_path / "x.tar", members)
    stats = ReadStats(max_bad_fraction=0.1)
    assert len(list(iter_shard(str(tmp_path / "x.tar"), stats))) == 60  # a whole-split reader judges once read
    with pytest.raises(ValueError, match=r"x: 60 of 120 samples are bad \(undecodable-image 60\), more than"):
        stats.judge("x")
    with pytest.raises(ValueError, match="samples are bad"):  # training judges the stream at a pass's end
        list(stream(str(tmp_path), 0, stats=ReadStats(max_bad_fraction=0.1, running=True), epochs=1))


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no .tar shards"):
        list(iter_split(str(tmp_path)))


@pytest.mark.parametrize("damage,words", [("truncate", "Compressed file ended"), ("crc", "CRC check failed")])
def test_a_damaged_gzip_shard_is_one_error_naming_it(tmp_path, damage, words):
    """Issue 27: a gzip-compressed shard cut short raised EOFError (a traceback), one with a bad CRC an
    error that named no shard; both are now the reader's one ValueError naming the shard."""
    import gzip as gz

    write_split(tmp_path / "src", n=20, shard_size=20)
    data = gz.compress((tmp_path / "src" / "s-00000.tar").read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]  # the stored CRC-32
    (tmp_path / "bad").mkdir()
    shard = tmp_path / "bad" / "s-00000.tar"
    shard.write_bytes(data)
    with pytest.raises(ValueError, match=rf"{shard}: damaged gzip stream after \d+ bytes of tar \({words}"):
        list(iter_shard(str(shard)))


def test_a_bad_pixel_limit_is_an_error_not_undecodable_images(tmp_path, monkeypatch):
    """Issue 27: a bad $JESTFLOW_MAX_IMAGE_PIXELS made every image "undecodable" (and the split fail for
    too many bad samples); now the first read names the variable."""
    write_split(tmp_path, n=5)
    monkeypatch.setenv("JESTFLOW_MAX_IMAGE_PIXELS", "40M")
    with pytest.raises(ValueError, match=r"\$JESTFLOW_MAX_IMAGE_PIXELS='40M' must be a positive number of pixels"):
        list(iter_split(str(tmp_path)))
