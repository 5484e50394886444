"""images/build.sh refuses, in one line and before sending anything to Docker, when Docker's data root
lacks the disk a flavour's build needs (a CI run once died half-way, at `COPY dist`, with "no space left
on device"). `docker` and `df` are stand-ins on PATH here: what is tested is the script's own rule."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fake_bin(tmp_path, free_kb: int) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" = info ] && echo /var/lib/docker\nexit 0\n')
    (bin_dir / "df").write_text(
        "#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
        f"echo '/dev/x 100000000 1 {free_kb} 1% /'\n"
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("flavour,free_gb", [("cpu", 3), ("cuda", 20)])
def test_build_refuses_without_the_disk_it_needs(tmp_path, flavour, free_gb):
    env = _fake_bin(tmp_path, free_gb * 1024 * 1024)
    r = subprocess.run(["bash", "images/build.sh", flavour, "t:1", "base:1", "w.whl"],
                       cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 1
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and f"/var/lib/docker has {free_gb} GB free" in err, err
    assert "build" not in (tmp_path / "docker.log").read_text()  # nothing was sent to Docker


def test_build_rejects_an_unknown_flavour(tmp_path):
    r = subprocess.run(["bash", "images/build.sh", "rocm", "t:1", "base:1", "w.whl"],
                       cwd=ROOT, env=_fake_bin(tmp_path, 10**9), capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "flavour must be cpu or cuda, not 'rocm'" in r.stderr
