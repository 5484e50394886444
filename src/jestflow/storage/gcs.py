"""``gs://bucket/prefix`` storage through google-cloud-storage.

Reads stream (`Blob.open("rb")` fetches chunk by chunk); writes go to a local temporary file and are
uploaded when complete — resumable uploads in `CHUNK_SIZE` pieces for large files — and a GCS object
only becomes visible once its upload has finished, so a crash never leaves an object that looks
complete. Every call retries transient errors (429, 5xx, connection resets) with exponential backoff,
logging each retry, for at most ``$JESTFLOW_GCS_DEADLINE`` seconds (default 120); then it fails with
one line naming the bucket. Credentials come only from the environment: Application Default
Credentials / Workload Identity on a cluster; with ``STORAGE_EMULATOR_HOST`` set, anonymous
credentials for the emulator. No credentials at all is one line saying what to set.

`GCSStore` implements storage.Store's interface; the storage package constructs it on the first gs:// URI, so
this module (and google-cloud-storage) is imported only by runs that use GCS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from typing import IO

CHUNK_SIZE = 8 * 1024 * 1024  # resumable-upload chunk (a multiple of 256 KiB, as GCS requires)
DEADLINE_ENV = "JESTFLOW_GCS_DEADLINE"
log = logging.getLogger(__name__)


def deadline() -> float:
    raw = os.environ.get(DEADLINE_ENV, "120")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"${DEADLINE_ENV}={raw!r} must be a positive number of seconds")
    return value


def _retry():
    """google-cloud-storage's own transient-error predicate (408, 429, 5xx, connection errors, also as
    raised by its media layer), with our backoff: 0.2 s doubling to 10 s, for up to `deadline()`
    seconds, each retry logged."""
    from google.api_core.retry import Retry
    from google.cloud.storage.retry import DEFAULT_RETRY

    t0 = time.monotonic()

    def said(e):
        log.warning(
            "GCS: %s: %s; retrying (%.0f s of %.0f s)", type(e).__name__, str(e)[:160], time.monotonic() - t0, limit
        )

    limit = deadline()
    return Retry(
        predicate=DEFAULT_RETRY._predicate, initial=0.2, maximum=10.0, multiplier=2.0, timeout=limit, on_error=said
    )


@contextlib.contextmanager
def _errors(uri: str) -> Iterator[None]:
    """Credential problems and exhausted retries as one line naming the bucket and what to do."""
    from google.api_core import exceptions
    from google.auth import exceptions as auth

    bucket = split(uri)[0]
    try:
        yield
    except auth.DefaultCredentialsError:
        raise ValueError(
            f"gs://{bucket}: no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service-account "
            "key file, run `gcloud auth application-default login`, or use Workload Identity on GKE "
            "(STORAGE_EMULATOR_HOST for an emulator)"
        ) from None
    except exceptions.RetryError as e:
        cause = e.cause if e.cause is not None else e
        raise ValueError(
            f"gs://{bucket}: unreachable, gave up after {deadline():.0f} s of retries "
            f"({type(cause).__name__}: {str(cause).splitlines()[0][:160] if str(cause) else ''}); check the network"
            f"{' and STORAGE_EMULATOR_HOST' if os.environ.get('STORAGE_EMULATOR_HOST') else ''}, "
            f"or allow longer with ${DEADLINE_ENV}"
        ) from None


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
        with _errors(uri):
            return self.client.bucket(bucket).blob(path, chunk_size=CHUNK_SIZE)

    def list(self, uri: str, suffix: str = "") -> list[str]:
        bucket, prefix = split(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        with _errors(uri):
            blobs = self.client.list_blobs(bucket, prefix=prefix, delimiter="/", retry=_retry())
            names = sorted(f"gs://{bucket}/{b.name}" for b in blobs if b.name.endswith(suffix) and b.name != prefix)
        return names

    def open_read(self, uri: str) -> IO[bytes]:
        from google.api_core import exceptions

        blob = self._blob(uri)
        try:
            with _errors(uri):
                if not blob.exists(retry=_retry()):
                    raise ValueError(f"no such object: {uri}")
                return blob.open("rb", retry=_retry())
        except exceptions.Forbidden as e:
            raise ValueError(f"no permission to read {uri}: {e.message}") from None

    def exists(self, uri: str) -> bool:
        blob = self._blob(uri)
        with _errors(uri):
            return blob.exists(retry=_retry())

    def _reloaded(self, uri: str):
        """The blob with its metadata (size, checksums) fetched."""
        from google.api_core import exceptions

        blob = self._blob(uri)
        try:
            with _errors(uri):
                blob.reload(retry=_retry())
        except exceptions.NotFound:
            raise ValueError(f"no such object: {uri}") from None
        return blob

    def size(self, uri: str) -> int:
        return int(self._reloaded(uri).size)

    fingerprint_reads = False  # GCS stores each object's crc32c (composed objects' too)

    def fingerprint(self, uri: str) -> str:
        blob = self._reloaded(uri)
        return f"crc32c:{blob.crc32c}" if blob.crc32c else f"md5:{blob.md5_hash}:{blob.size}"

    @contextlib.contextmanager
    def atomic_path(self, uri: str) -> Iterator[str]:
        fd, tmp = tempfile.mkstemp(prefix="jestflow-upload-", suffix=".partial")
        os.close(fd)
        try:
            yield tmp
            blob = self._blob(uri)
            with _errors(uri):
                blob.upload_from_filename(tmp, retry=_retry())
        finally:
            os.unlink(tmp)
