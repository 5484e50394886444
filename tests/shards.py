"""Helpers for tests that build or take apart tar shards by hand."""

import io
import tarfile


def write_tar(path, items) -> None:
    """Write (member name, bytes) pairs as a tar file."""
    with tarfile.open(path, "w") as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def members(path) -> list:
    with tarfile.open(path) as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers()]
