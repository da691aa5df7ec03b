"""The only place that builds fsspec filesystems: local paths and s3:// alike.

Atomicity: a local write goes to a temporary name and is renamed; an object store
has no rename, but a single PUT is all-or-nothing, so callers write data objects
first and a manifest object last (a checkpoint without a valid manifest does not
exist). S3 endpoint and credentials come from the standard AWS variables or from
the recipe's `storage.s3` section; region is never forced (moto rejects it).

Retries on object storage, in two layers, both bounded, jittered and counted in `retries`:
- botocore's `standard` mode retries every *request* that failed or was refused (5xx,
  SlowDown and other throttles, resets and timeouts before the answer was read): up to
  S3_ATTEMPTS attempts, exponential backoff with full jitter, and a
  client-wide retry quota that stops retrying when most requests fail;
- a *body* cut short after botocore returned (a GET's stream reset or truncated) is ours:
  idempotent reads are repeated up to READ_ATTEMPTS times (`_retry_read`). s3fs's own retry
  loop (fixed backoff, uncounted) is turned off so the two above are the only ones.

Over ~300 lines on purpose: atomic writes and both retry layers are one contract, read together."""
from __future__ import annotations

import os
import posixpath
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

import fsspec

from .errors import StorageUnavailable


class StorageAccessDenied(StorageUnavailable):
    """The storage refused the credentials: retrying with the same ones cannot help."""

    retryable = False


class BucketNotFound(StorageUnavailable):
    """The bucket named by a path does not exist: create it, or fix the path."""

    retryable = False


@dataclass(frozen=True)
class StorageOptions:
    """Picklable settings a worker needs to rebuild the same filesystems."""

    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    anon: bool = False
    key: Optional[str] = field(default=None, repr=False)
    secret: Optional[str] = field(default=None, repr=False)
    token: Optional[str] = field(default=None, repr=False)

    @classmethod
    def from_recipe(cls, recipe: Any) -> "StorageOptions":
        s3 = recipe.storage.s3
        return cls(endpoint_url=s3.endpoint_url, region=s3.region, anon=s3.anon, key=s3.key, secret=s3.secret,
                   token=s3.token)


S3_ATTEMPTS = 5  # per request, the first included (botocore standard mode)
READ_ATTEMPTS = 4  # per read whose body was cut short, the first included
READ_BACKOFF_S = 0.2  # full jitter: retry n waits uniform(0, READ_BACKOFF_S * 2**(n-1))


def is_torn_body(err: BaseException) -> bool:
    """A response body that stopped short or was reset after botocore handed it over
    (its own retries only cover requests up to their headers)."""
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(names & {"ClientPayloadError", "ClientConnectionError", "ServerDisconnectedError",
                         "ResponseStreamingError", "IncompleteReadError", "IncompleteRead", "ConnectionResetError"})


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def _fs_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def local_path(uri: str) -> Optional[str]:
    """The filesystem path of a local uri (what mmap needs), or None for object storage."""
    return None if is_remote(uri) else _fs_path(uri)


# A writer names what it has not finished so; a killed one leaves it behind (cleanup_temp_files).
TEMP_NAME = re.compile(r"(\.tmp-[0-9a-f]{8}|^\.dj-write-probe-[0-9a-f]{8})$")


def _find_syncfs() -> Any:
    try:
        import ctypes
        import ctypes.util

        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).syncfs
    except (OSError, AttributeError):  # not Linux: os.sync() instead
        return None


_libc_syncfs = _find_syncfs()


def temp_path(path: str) -> str:
    """Where a whole file is written before it is renamed (or copied) into place at path."""
    return f"{path}.tmp-{uuid.uuid4().hex[:8]}"


def is_temp_file(name: str) -> bool:
    return TEMP_NAME.search(posixpath.basename(name)) is not None


class Storage:
    """A thin facade over one fsspec filesystem per protocol, with error translation."""

    def __init__(self, options: StorageOptions | None = None):
        self.options = options or StorageOptions()
        self._fs: dict[str, fsspec.AbstractFileSystem] = {}
        self.retries = 0  # object-storage requests and reads repeated after a failure (PERFORMANCE_METRIC)
        self._rng = random.Random()

    def fs(self, uri: str) -> fsspec.AbstractFileSystem:
        protocol = uri.split("://", 1)[0] if is_remote(uri) else "file"
        if protocol not in self._fs:
            fs = fsspec.filesystem(protocol, **self._fs_kwargs(protocol))
            if protocol in ("s3", "s3a"):
                fs.retries = 1  # s3fs's loop off: botocore and _retry_read retry, with jitter, counted
                fs.connect()  # builds the client (no request yet), so its attempts can be counted
                fs.s3.meta.events.register("request-created.s3", self._count_attempt)
            self._fs[protocol] = fs
        return self._fs[protocol]

    def _count_attempt(self, request: Any, **_: Any) -> None:
        if (getattr(request, "context", None) or {}).get("retries", {}).get("attempt", 1) > 1:
            self.retries += 1

    def _retry_read(self, what: str, uri: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """fn (an idempotent read), repeated with jittered backoff while its body comes back torn."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if attempt == READ_ATTEMPTS or not is_remote(uri) or not is_torn_body(err):
                    raise self._translate(what, uri, err) from err
            self.retries += 1
            time.sleep(self._rng.uniform(0, READ_BACKOFF_S * 2 ** (attempt - 1)))

    def _fs_kwargs(self, protocol: str) -> dict[str, Any]:
        if protocol not in ("s3", "s3a"):
            return {}
        endpoint = self.options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client: dict[str, Any] = {}
        if endpoint:
            client["endpoint_url"] = endpoint
        if self.options.region:
            client["region_name"] = self.options.region
        # A dead endpoint still fails within seconds (connection refused is not waited on);
        # the partition retry loop does the longer waiting.
        config = {"connect_timeout": 5, "read_timeout": 60,
                  "retries": {"mode": "standard", "total_max_attempts": S3_ATTEMPTS}}
        # No listings cache: workers write results the driver listed earlier (a stale
        # listing would hide them at export).
        creds = {k: v for k, v in (("key", self.options.key), ("secret", self.options.secret),
                                   ("token", self.options.token)) if v}
        return {"anon": self.options.anon, "client_kwargs": client, "config_kwargs": config,
                "skip_instance_cache": True, "use_listings_cache": False, **creds}

    def _path(self, uri: str) -> str:
        return _fs_path(uri)

    def endpoint(self, uri: str) -> str:
        """Where requests for uri go, for messages (never credentials)."""
        if not is_remote(uri):
            return "the local filesystem"
        return self._fs_kwargs(uri.split("://", 1)[0]).get("client_kwargs", {}).get("endpoint_url") or "AWS S3"

    def _guard(self, what: str, uri: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise self._translate(what, uri, err) from err

    def _translate(self, what: str, uri: str, err: Exception) -> Exception:
        """A storage error as a DJError that says where and what next; 'not found' stays itself."""
        if isinstance(err, FileNotFoundError) and is_remote(uri) and what == "writing":
            bucket = bucket_of(uri)  # object stores have no directories: only the bucket can be missing
            return BucketNotFound(f"bucket {bucket!r} does not exist at {self.endpoint(uri)} ({what} {uri!r}); "
                                  f"create it first (e.g. 'aws s3 mb s3://{bucket}') or point the path at an "
                                  "existing bucket")
        if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, StorageUnavailable)):
            return err
        if isinstance(err, PermissionError):
            if is_remote(uri):
                return StorageAccessDenied(
                    f"{what} {uri!r}: access denied by {self.endpoint(uri)} ({err}); check the credentials "
                    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the pod's secret) and the bucket policy")
            return StorageAccessDenied(f"{what} {uri!r}: permission denied ({err}); check directory permissions")
        if isinstance(err, OSError):
            return StorageUnavailable(f"{what} {uri!r} failed at {self.endpoint(uri)}: {err}; "
                                      "check that the storage is reachable and has space")
        # botocore/aiohttp errors surface as many types
        return StorageUnavailable(f"{what} {uri!r} failed at {self.endpoint(uri)}: {type(err).__name__}: {err}; "
                                  "check that the endpoint is up (AWS_ENDPOINT_URL / storage.s3.endpoint_url)")

    # --- reads -----------------------------------------------------------
    def exists(self, uri: str) -> bool:
        return self._guard("checking", uri, self.fs(uri).exists, self._path(uri))

    def read_bytes(self, uri: str) -> bytes:
        return self._retry_read("reading", uri, self.fs(uri).cat_file, self._path(uri))

    def open(self, uri: str, mode: str = "rb", **kwargs: Any) -> Any:
        """A file object; on object storage its reads and writes translate errors like every other call."""
        fh = self._guard("opening", uri, self.fs(uri).open, self._path(uri), mode, **kwargs)
        if not is_remote(uri):
            return fh
        reads = None if mode.startswith(("w", "a", "x")) else lambda fn, *a: self._retry_read("reading", uri, fn, *a)
        return GuardedFile(fh, mode, lambda what, err: self._translate(what, uri, err), reads)

    def info(self, uri: str) -> dict[str, Any]:
        return self._guard("inspecting", uri, self.fs(uri).info, self._path(uri))

    def listdir(self, uri: str, prefix: str = "") -> list[str]:
        """Base names directly under uri (only those starting with prefix); [] when it does not exist.

        On object storage the prefix filters server-side: one partition's few checkpoints are
        found without paging through every partition's."""
        fs = self.fs(uri)
        try:
            if not is_remote(uri):
                names = os.listdir(self._path(uri))
            elif prefix:
                names = self._guard("listing", uri, fs.find, self._path(uri), maxdepth=1, prefix=prefix)
            else:
                names = self._guard("listing", uri, fs.ls, self._path(uri), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(n for n in (posixpath.basename(n.rstrip("/")) for n in names) if n.startswith(prefix))

    def find(self, uri: str) -> list[str]:
        """Every file below uri, recursively, as URIs; [] when it does not exist."""
        scheme = uri.split("://", 1)[0] + "://" if is_remote(uri) else ""
        try:
            found = self._guard("listing", uri, self.fs(uri).find, self._path(uri))
        except FileNotFoundError:
            return []
        return sorted(scheme + p if scheme and not p.startswith(scheme) else p for p in found)

    # --- writes ----------------------------------------------------------
    def makedirs(self, uri: str) -> None:
        if not is_remote(uri):
            try:
                self._guard("creating", uri, os.makedirs, self._path(uri), exist_ok=True)
            except NotADirectoryError as err:
                raise StorageUnavailable(f"cannot create directory {uri!r}: {err}; a part of that path is a file, "
                                         "not a directory: fix the path") from err

    def put_bytes(self, uri: str, data: bytes, durable: bool = True) -> None:
        """Write a whole object so that readers see the old state or the new, never a torn one.

        `durable=False` skips the local fsync: the rename still makes a killed writer harmless,
        and only a machine crash could leave the file short. Callers that verify what they read
        (checkpoints: content hash and row count against the manifest) pass it, since a short
        file is then recomputed, never trusted; an fsync per checkpoint costs more than the op
        at small partitions."""
        if is_remote(uri):
            self._guard("writing", uri, self.fs(uri).pipe_file, self._path(uri), data)
            return
        path = self._path(uri)
        self.makedirs(os.path.dirname(path) or ".")
        tmp = temp_path(path)
        def write() -> None:
            with open(tmp, "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        try:
            self._guard("writing", uri, write)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def sync(self, uri: str) -> None:
        """Make every write under a local directory durable at once (one syncfs of its
        filesystem), for writers that skipped the per-file fsync of many small files.
        Object stores are durable once a PUT returns: nothing to do."""
        if is_remote(uri):
            return
        fd = os.open(self._path(uri), os.O_RDONLY)
        try:
            if _libc_syncfs is None or _libc_syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def remove(self, uri: str, recursive: bool = False) -> None:
        try:
            self._guard("removing", uri, self.fs(uri).rm, self._path(uri), recursive=recursive)
        except FileNotFoundError:
            pass

    def check_writable(self, uri: str) -> None:
        """Fail before any work if a directory or bucket cannot take writes (missing bucket, bad keys).

        Writes and removes one small probe object; nothing else is touched."""
        probe = join(uri, f".dj-write-probe-{uuid.uuid4().hex[:8]}")  # is_temp_file knows this name
        try:
            self.put_bytes(probe, b"ok")
        except BucketNotFound as err:
            bucket = bucket_of(uri)
            raise BucketNotFound(
                f"bucket {bucket!r} does not exist at {self.endpoint(uri)} (needed for {uri!r}); "
                f"create it first (e.g. 'aws s3 mb s3://{bucket}') or point the path at an existing bucket") from err
        except FileNotFoundError as err:
            raise StorageUnavailable(f"cannot write under {uri!r}: {err}; create the directory first") from err
        self.remove(probe)


def bucket_of(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0]


class GuardedFile:
    """A remote file whose lazy reads and writes (s3fs fetches on read, uploads on write and
    close) raise the same DJErrors as the Storage calls, not raw botocore errors."""

    def __init__(self, fh: Any, mode: str, translate: Any, retry_read: Any = None):
        self._fh, self._translate, self._retry_read = fh, translate, retry_read
        self._closing = "writing" if mode.startswith(("w", "a", "x")) else "closing"

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as err:
            raise self._translate(what, err) from err

    def _read(self, fn: Any, *args: Any) -> Any:
        # A failed fetch leaves the file's position where it was, so the read can be repeated.
        if self._retry_read is not None:
            return self._retry_read(fn, *args)
        return self._call("reading", fn, *args)

    def read(self, *args: Any) -> Any:
        return self._read(self._fh.read, *args)

    def readline(self, *args: Any) -> Any:
        return self._read(self._fh.readline, *args)

    def readinto(self, buf: Any) -> Any:
        return self._read(self._fh.readinto, buf)

    def seek(self, *args: Any) -> Any:
        return self._call("reading", self._fh.seek, *args)

    def write(self, data: Any) -> Any:
        return self._call("writing", self._fh.write, data)

    def flush(self) -> Any:
        return self._call("writing", self._fh.flush)

    def close(self) -> Any:
        return self._call(self._closing, self._fh.close)

    def __iter__(self) -> Any:
        it = iter(self._fh)
        while True:
            try:
                line = next(it)
            except StopIteration:
                return
            except Exception as err:
                raise self._translate("reading", err) from err
            yield line

    def __enter__(self) -> "GuardedFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)
