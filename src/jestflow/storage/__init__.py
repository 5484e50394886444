"""Where bytes live. Everything that reads or writes datasets, caches and artifacts goes through here.

Local paths are this module's `LocalStore`; ``gs://`` is gcs.GCSStore, constructed (and its heavy
client library imported) on the first such URI. The rest of jestflow never cares where a file is.
Writes are atomic: data goes to a temporary name in the same folder and is renamed at the end, so a
crash never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


class Store:
    """Minimal file interface: list, read, atomic write."""

    def list(self, uri: str, suffix: str = "") -> list[str]:
        raise NotImplementedError

    def open_read(self, uri: str) -> IO[bytes]:
        raise NotImplementedError

    def exists(self, uri: str) -> bool:
        raise NotImplementedError

    def size(self, uri: str) -> int:
        raise NotImplementedError

    # True where `fingerprint` costs a read of the file (then it is better made on a read that happens
    # anyway, see `open_read`'s crc); False where the store keeps a checksum (GCS's crc32c).
    fingerprint_reads = True

    def fingerprint(self, uri: str) -> str:
        """A fingerprint of every byte of the file: CRC32C in GCS's own format ("crc32c:" + base64 of the
        big-endian checksum), so a shard keeps its fingerprint when copied between stores."""
        raise NotImplementedError

    @contextlib.contextmanager
    def atomic_path(self, uri: str) -> Iterator[str]:
        """Yield a local path to write; it appears at `uri` only if the block finishes."""
        raise NotImplementedError


class Crc32c:
    """A running CRC32C of bytes as they are read; `fingerprint()` is `Store.fingerprint`'s string."""

    def __init__(self):
        import google_crc32c

        self._c = google_crc32c.Checksum()

    def update(self, data: bytes) -> None:
        self._c.update(data)

    def fingerprint(self) -> str:
        import base64

        return "crc32c:" + base64.b64encode(self._c.digest()).decode()


class LocalStore(Store):
    def list(self, uri: str, suffix: str = "") -> list[str]:
        root = Path(uri)
        if not root.is_dir():
            raise ValueError(f"not a folder: {uri}")
        return sorted(str(p) for p in root.iterdir() if p.is_file() and p.name.endswith(suffix))

    def open_read(self, uri: str) -> IO[bytes]:
        try:
            return open(uri, "rb")
        except FileNotFoundError:
            raise ValueError(f"no such file: {uri}") from None

    def exists(self, uri: str) -> bool:
        return os.path.exists(uri)

    def size(self, uri: str) -> int:
        try:
            return os.path.getsize(uri)
        except FileNotFoundError:
            raise ValueError(f"no such file: {uri}") from None

    def fingerprint(self, uri: str) -> str:
        # Every byte (google-crc32c's C code hashes ~15 GB/s here, so the disk sets the pace); a GCS
        # object's fingerprint is the crc32c GCS stored at upload, read from its metadata.
        crc = Crc32c()
        try:
            with open(uri, "rb") as f:
                while chunk := f.read(1 << 20):
                    crc.update(chunk)
        except FileNotFoundError:
            raise ValueError(f"no such file: {uri}") from None
        return crc.fingerprint()

    @contextlib.contextmanager
    def atomic_path(self, uri: str) -> Iterator[str]:
        final = Path(uri)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        try:
            yield tmp
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _gcs_store() -> Store:
    from .gcs import GCSStore

    return GCSStore()


SCHEMES: dict[str, Callable[[], Store]] = {"gs://": _gcs_store}  # URI prefix -> store factory
_INSTANCES: dict[str, Store] = {}  # one store (and client) per scheme and process
_LOCAL = LocalStore()


def store_for(uri: str) -> Store:
    for prefix, factory in SCHEMES.items():
        if uri.startswith(prefix):
            if prefix not in _INSTANCES:
                _INSTANCES[prefix] = factory()
            return _INSTANCES[prefix]
    if "://" in uri:
        raise ValueError(f"unsupported storage URI scheme: {uri}")
    return _LOCAL


def join(uri: str, *parts: str) -> str:
    if "://" in uri:
        return "/".join([uri.rstrip("/"), *parts])
    return str(Path(uri, *parts))


def list_files(uri: str, suffix: str = "") -> list[str]:
    return store_for(uri).list(uri, suffix)


class _Counted:
    """A read-only binary file that adds what is read from it to `bytes_read()`."""

    def __init__(self, f, crc: Crc32c | None = None):
        self._f, self._crc = f, crc

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        _count(len(data))
        if self._crc is not None:
            self._crc.update(data)
        return data

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


_READ = [0]
_READ_LOCK = threading.Lock()


def _count(n: int) -> None:
    with _READ_LOCK:
        _READ[0] += n


def bytes_read() -> int:
    """Bytes this process has read through `open_read` (the scale rehearsal reports it per step)."""
    return _READ[0]


def open_read(uri: str, crc: Crc32c | None = None) -> IO[bytes]:
    """Open `uri` for reading. `crc`: also hash every byte read into it (a fingerprint made on the pass
    that reads the file anyway; read to the end for it to cover the file)."""
    return _Counted(store_for(uri).open_read(uri), crc)


def exists(uri: str) -> bool:
    return store_for(uri).exists(uri)


def size(uri: str) -> int:
    return store_for(uri).size(uri)


def fingerprint(uri: str) -> str:
    return store_for(uri).fingerprint(uri)


def fingerprint_reads(uri: str) -> bool:
    return store_for(uri).fingerprint_reads


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


@contextlib.contextmanager
def atomic_path(uri: str) -> Iterator[str]:
    with store_for(uri).atomic_path(uri) as tmp:
        yield tmp


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_path(uri) as tmp:
        Path(tmp).write_bytes(data)


def json_safe(obj):
    """`obj` with every NaN float as None (null in JSON, which has no NaN; ±inf is kept). For what is shown
    to people and other tools (the evaluate command's printout). Files are still written as Python's json
    writes them: the benchmarks' results use NaN for "not measured" and read it back as such."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(uri: str, obj) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(uri: str):
    with open_read(uri) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{uri}: not valid JSON ({e})") from None
