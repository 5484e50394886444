"""``gs://bucket/prefix`` storage through google-cloud-storage.

Reads stream (`Blob.open("rb")` fetches chunk by chunk); writes go to a local temporary file and are
uploaded when complete — resumable uploads in `CHUNK_SIZE` pieces for large files — and a GCS object
only becomes visible once its upload has finished, so a crash never leaves an object that looks
complete. Every call retries transient errors (429, 5xx, connection resets) with exponential backoff
(`RETRY`). Credentials come only from the environment: Application Default Credentials / Workload
Identity on a cluster; with ``STORAGE_EMULATOR_HOST`` set, anonymous credentials for the emulator.

`GCSStore` implements storage.Store's interface; storage.py constructs it on the first gs:// URI, so
this module (and google-cloud-storage) is imported only by runs that use GCS.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO

CHUNK_SIZE = 8 * 1024 * 1024  # resumable-upload chunk (a multiple of 256 KiB, as GCS requires)


def _retry():
    """google-cloud-storage's own transient-error predicate (408, 429, 5xx, connection errors, also as
    raised by its media layer), with our backoff: 0.2 s doubling to 10 s, for up to 2 minutes."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=0.2, maximum=10.0, multiplier=2.0).with_timeout(120.0)


def split(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri}")
    bucket, _, path = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri}")
    return bucket, path


class GCSStore:  # the storage.Store interface
    def __init__(self, client=None):
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from google.cloud import storage as gcs

            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                self._client = gcs.Client(
                    project=os.environ.get("GOOGLE_CLOUD_PROJECT", "local"), credentials=AnonymousCredentials()
                )
            else:
                self._client = gcs.Client()  # Application Default Credentials / Workload Identity
        return self._client

    def _blob(self, uri: str):
        bucket, path = split(uri)
        return self.client.bucket(bucket).blob(path, chunk_size=CHUNK_SIZE)

    def list(self, uri: str, suffix: str = "") -> list[str]:
        bucket, prefix = split(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        blobs = self.client.list_blobs(bucket, prefix=prefix, delimiter="/", retry=_retry())
        names = sorted(f"gs://{bucket}/{b.name}" for b in blobs if b.name.endswith(suffix) and b.name != prefix)
        return names

    def open_read(self, uri: str) -> IO[bytes]:
        from google.api_core import exceptions

        blob = self._blob(uri)
        try:
            if not blob.exists(retry=_retry()):
                raise ValueError(f"no such object: {uri}")
            return blob.open("rb", retry=_retry())
        except exceptions.Forbidden as e:
            raise ValueError(f"no permission to read {uri}: {e.message}") from None

    def exists(self, uri: str) -> bool:
        return self._blob(uri).exists(retry=_retry())

    def _reloaded(self, uri: str):
        """The blob with its metadata (size, checksums) fetched."""
        from google.api_core import exceptions

        blob = self._blob(uri)
        try:
            blob.reload(retry=_retry())
        except exceptions.NotFound:
            raise ValueError(f"no such object: {uri}") from None
        return blob

    def size(self, uri: str) -> int:
        return int(self._reloaded(uri).size)

    def fingerprint(self, uri: str) -> str:
        blob = self._reloaded(uri)
        return f"crc32c:{blob.crc32c}" if blob.crc32c else f"md5:{blob.md5_hash}:{blob.size}"

    @contextlib.contextmanager
    def atomic_path(self, uri: str) -> Iterator[str]:
        fd, tmp = tempfile.mkstemp(prefix="jestflow-upload-", suffix=".partial")
        os.close(fd)
        try:
            yield tmp
            self._blob(uri).upload_from_filename(tmp, retry=_retry())
        finally:
            os.unlink(tmp)
