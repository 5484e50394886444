"""gs:// storage through the real google-cloud-storage client against gcp-storage-emulator, with
transient failures injected by a proxy in between."""

import os

import pytest

from cli import smoke_args
from jestflow import storage
from jestflow.cli import main
from jestflow.storage.gcs import CHUNK_SIZE

B = "gs://jestflow-test"
SMOKE = ["--preset", "smoke", "--quiet"]


def test_resumable_upload_larger_than_a_chunk_survives_a_failed_chunk(gcs):
    data = os.urandom(CHUNK_SIZE + 1024 * 1024)
    gcs.fail_next = {"upload_id=": 1}  # the first chunk PUT of the session fails once
    gcs.requests.clear(), gcs.failed.clear()
    storage.write_bytes(f"{B}/big/blob.bin", data)
    puts = [r for r in gcs.requests if r.startswith("PUT") and "upload_id=" in r]
    assert len(gcs.failed) == 1 and len(puts) == 3  # failed chunk retried, then two chunks
    with storage.open_read(f"{B}/big/blob.bin") as f:
        assert f.read() == data
    assert storage.size(f"{B}/big/blob.bin") == len(data)


def test_transient_read_and_list_failures_are_retried(gcs):
    storage.write_bytes(f"{B}/r/a.txt", b"payload")
    gcs.fail_next = {"alt=media": 2, "GET /storage/v1/b/jestflow-test/o?": 1}
    gcs.failed.clear()
    assert storage.list_files(f"{B}/r", ".txt") == [f"{B}/r/a.txt"]
    with storage.open_read(f"{B}/r/a.txt") as f:
        assert f.read() == b"payload"
    assert len(gcs.failed) == 3


def test_a_shard_keeps_its_fingerprint_between_disk_and_bucket(gcs, tmp_path):
    """A local file's fingerprint (a CRC32C of every byte, read) equals the one GCS keeps for the same
    bytes (from the object's metadata), so a score cache made on one store matches the pool copied to the
    other; a one-byte change moves both."""
    data = bytearray(os.urandom(300_000))
    for i in range(2):
        local, remote = tmp_path / f"s{i}.tar", f"{B}/fp/s{i}.tar"
        local.write_bytes(data)
        storage.write_bytes(remote, bytes(data))
        assert storage.fingerprint(str(local)) == storage.fingerprint(remote)
        assert storage.fingerprint(remote).startswith("crc32c:") and not storage.fingerprint_reads(remote)
        data[150_000] ^= 1
    assert storage.fingerprint(f"{B}/fp/s0.tar") != storage.fingerprint(f"{B}/fp/s1.tar")


def test_a_pretrained_siglip_loads_from_a_gs_prefix(gcs, tmp_path):
    """--reference-model gs://...: the hub folder's files are copied from the bucket, the model is the same
    as from the local folder, and its weights id is the bucket object's crc32c (no second read)."""
    import torch

    from hf import make_pretrained_siglip
    from jestflow.model.factory import load_pretrained

    make_pretrained_siglip(tmp_path / "pre")
    for f in (tmp_path / "pre").iterdir():
        storage.write_bytes(f"{B}/models/pre/{f.name}", f.read_bytes())
    local, local_tok, local_id = load_pretrained(str(tmp_path / "pre"))
    remote, remote_tok, remote_id = load_pretrained(f"{B}/models/pre")
    assert remote_id == local_id == storage.fingerprint(f"{B}/models/pre/model.safetensors")
    tokens = local_tok.encode(["a small red shirt"])
    assert torch.equal(remote_tok.encode(["a small red shirt"]), tokens)
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(
            remote.eval()(images, tokens.repeat(2, 1)), local.eval()(images, tokens.repeat(2, 1))
        )


def test_missing_object_is_a_clear_error(gcs):
    with pytest.raises(ValueError, match="no such object: gs://jestflow-test/nope.txt"):
        storage.open_read(f"{B}/nope.txt")


def test_stages_read_and_write_a_bucket(gcs):
    small = [
        "--set",
        "demo.n_curated=200",
        "--set",
        "demo.n_pool=400",
        "--set",
        "demo.n_eval=60",
        "--set",
        "demo.shard_size=100",
        "--set",
        "reference.steps=20",
        "--set",
        "learner.steps=6",
        "--set",
        "learner.eval_every=3",
    ]
    d = f"{B}/demo"
    assert main(["data", "demo", "--out", d, *SMOKE, *small]) == 0
    assert storage.list_files(f"{d}/pool", ".tar") == [f"{d}/pool/pool-0000{i}.tar" for i in range(4)]
    assert main(["train-reference", "--data", f"{d}/curated", "--out", f"{B}/ref", *SMOKE, *small]) == 0
    gcs.fail_next = {"alt=media": 1}  # one shard read fails transiently during scoring
    assert (
        main(["score", "--reference", f"{B}/ref", "--data", f"{d}/pool", "--out", f"{B}/scores", *SMOKE, *small]) == 0
    )
    train = smoke_args(
        "train", method="jest", data=f"{d}/pool", scores=f"{B}/scores", eval=f"{d}/eval", out=f"{B}/jest"
    )
    assert main([*train, *small]) == 0
    assert (
        main(
            ["evaluate", "--model", f"{B}/jest", "--data", f"{d}/eval", "--out", f"{B}/jest/eval.json", *SMOKE, *small]
        )
        == 0
    )
    summary = storage.read_json(f"{B}/jest/train.json")
    assert summary["steps"] == 6 and len(summary["curve"]) == 2
    assert 0 <= storage.read_json(f"{B}/jest/eval.json")["retrieval_r1"] <= 1
    assert storage.read_json(f"{B}/scores/index.json")["n"] == 400
    for name in ("model.pt", "checkpoint.pt", "tokenizer.json", "config.yaml"):
        assert storage.exists(f"{B}/jest/{name}")
    # scoring resumes shard by shard on GCS too: drop the index and one shard, rerun, only that one is redone
    gcs.requests.clear()
    storage.store_for(B).client.bucket("jestflow-test").blob("scores/index.json").delete()
    storage.store_for(B).client.bucket("jestflow-test").blob("scores/pool-00002.npz").delete()
    assert (
        main(["score", "--reference", f"{B}/ref", "--data", f"{d}/pool", "--out", f"{B}/scores", *SMOKE, *small]) == 0
    )
    uploads = [r for r in gcs.requests if r.startswith("POST /upload")]
    assert len(uploads) == 4  # pool-00002.npz, tokenizer.json, index.json, score-config.yaml


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _isolated_env(tmp_path, **extra):
    """No credentials anywhere: no key file, no gcloud config, and the GCE metadata server (which
    google-auth would probe) pointed at a closed port on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "STORAGE_EMULATOR", "CLOUDSDK"))}
    port = _closed_port()
    env.update(
        HOME=str(tmp_path),
        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
        GCE_METADATA_HOST=f"127.0.0.1:{port}",
        GCE_METADATA_IP=f"127.0.0.1:{port}",
        NO_GCE_CHECK="True",
        **extra,
    )
    return env


def test_no_credentials_is_one_line_naming_the_bucket(smoke_scored, tmp_path):
    """Issue 16: was a DefaultCredentialsError traceback."""
    from cli import run_jestflow

    r = run_jestflow(*smoke_args("evaluate", model=smoke_scored / "ref", data="gs://team-bucket/eval"),
                     env=_isolated_env(tmp_path), timeout=120)  # fmt: skip
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert "gs://team-bucket: no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS" in lines[0]


def test_unreachable_endpoint_gives_up_at_the_deadline_saying_so(smoke_scored, tmp_path):
    """Issue 16: was 120 s of silence, then a 130-line RetryError. Now each retry is logged, the
    deadline is $JESTFLOW_GCS_DEADLINE, and the end is one line naming the bucket."""
    import time

    from cli import run_jestflow

    env = _isolated_env(tmp_path, STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{_closed_port()}", JESTFLOW_GCS_DEADLINE="4")
    t0 = time.monotonic()
    r = run_jestflow(*smoke_args("evaluate", model=smoke_scored / "ref", data="gs://team-bucket/eval"),
                     env=env, timeout=120)  # fmt: skip
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr[-2000:]
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "retrying" in r.stderr  # said while it waited
    assert err[-1].startswith("jestflow: error: gs://team-bucket: unreachable, gave up after 4 s of retries")
    assert not any(ln.startswith("Traceback") for ln in err)
    assert took < 60
