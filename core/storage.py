"""Where the batch side keeps its files: a local folder or an object store (``s3a://bucket/prefix``).

``DATA_DIR`` and ``ARTIFACTS_DIR`` may name an S3-compatible bucket, so that the Spark executors of
a multi-host cluster, the training driver, the workers and the site share Parquet, run records and
model versions. Spark reads and writes such a location itself (``s3a://``, hadoop-aws, configured
by :func:`spark_conf`); everything else (Parquet read back on the driver, model files, ``CURRENT``,
serving lists, run records) goes through the few functions here, on top of ``pyarrow.fs``, which
speaks S3 with an endpoint override. A local path keeps the exact local behaviour (atomic renames).

The S3 connection comes from the environment, with defaults for the local server that
``bin/services start s3`` runs (no credentials in code): ``S3_ENDPOINT_URL`` (default
``http://127.0.0.1:$S3_PORT``, ``S3_PORT`` 9000), ``S3_PATH_STYLE`` (default 1), ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` (default us-east-1).

Only the standard library at import time: core.settings (read by the Airflow venv) uses
:func:`location`; pyarrow is imported by the functions that touch files.
"""
from __future__ import annotations

import gzip
import io
import os
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Union

from core.env import env_bool, env_int, env_str

REMOTE_SCHEMES = ("s3a://", "s3://", "s3n://")
HADOOP_AWS_VERSION = "3.3.4"  # the Hadoop that pyspark 3.5.x ships; hadoop-aws must match it


class RemotePath(str):
    """An object-store location that joins like a ``Path`` (``base / "runs" / run_id``).

    A ``str``, so every ``f"{location}/reviews"`` and ``str(location)`` handed to Spark keeps
    working; local-only calls (``mkdir``, ``open``) do not exist on it, which makes each place that
    must go through this module fail loudly rather than write to a folder named ``s3a:``.
    """

    def __new__(cls, value: str) -> "RemotePath":
        scheme, rest = value.split("://", 1)
        return super().__new__(cls, f"{scheme}://{rest.strip('/')}")

    def __truediv__(self, part: object) -> "RemotePath":
        return RemotePath(f"{self}/{str(part).strip('/')}")

    @property
    def name(self) -> str:
        return posixpath.basename(str.__str__(self).split("://", 1)[1])

    @property
    def parent(self) -> "RemotePath":
        scheme, rest = str.__str__(self).split("://", 1)
        return RemotePath(f"{scheme}://{posixpath.dirname(rest) or rest}")

    def __repr__(self) -> str:
        return f"RemotePath({str.__str__(self)!r})"


Location = Union[Path, RemotePath]


def is_remote(where: object) -> bool:
    return str(where).startswith(REMOTE_SCHEMES)


def location(value: str | os.PathLike) -> Location:
    """A ``Path`` for a local folder, a :class:`RemotePath` for an object-store URI."""
    return RemotePath(str(value)) if is_remote(value) else Path(value)


def join(base: Location | str, *parts: str) -> Location:
    out = location(base)
    for part in parts:
        out = out / part
    return out


# --- the S3 connection ---------------------------------------------------------------------------

def s3_endpoint() -> str:
    return env_str("S3_ENDPOINT_URL", f"http://127.0.0.1:{env_int('S3_PORT', 9000, minimum=1)}")


def _credentials() -> tuple[str, str]:
    # The local server (gofakes3) accepts any key; a real store gets them from the environment.
    return env_str("AWS_ACCESS_KEY_ID", "local"), env_str("AWS_SECRET_ACCESS_KEY", "local")


def _path_style() -> bool:
    return env_bool("S3_PATH_STYLE", True)


def filesystem(where: Location | str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for a local path or an ``s3a://`` / ``s3://`` URI."""
    from pyarrow import fs as pafs

    text = str(where)
    if not is_remote(text):
        return pafs.LocalFileSystem(), os.path.abspath(text)
    # The AWS SDK in pyarrow >= 2x (the Airflow venv's: Airflow does not pin it) sends a checksum in
    # "aws-chunked" uploads without a Content-Length by default; S3-compatible servers such as the
    # local one refuse them (HTTP 411). Checksums only where the API requires them, as older SDKs did;
    # read when the SDK starts (this process's first S3 filesystem), and a value set outside wins.
    os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "WHEN_REQUIRED")
    endpoint = s3_endpoint()
    key, secret = _credentials()
    scheme = "https" if endpoint.startswith("https://") else "http"
    s3 = pafs.S3FileSystem(access_key=key, secret_key=secret, region=env_str("AWS_REGION", "us-east-1"),
                           endpoint_override=endpoint.split("://", 1)[-1], scheme=scheme,
                           force_virtual_addressing=not _path_style())
    return s3, text.split("://", 1)[1].strip("/")


# --- files ---------------------------------------------------------------------------------------

def exists(where: Location | str) -> bool:
    if not is_remote(where):
        return os.path.exists(where)
    from pyarrow import fs as pafs

    fs, path = filesystem(where)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(where: Location | str) -> bool:
    if not is_remote(where):
        return os.path.isfile(where)
    from pyarrow import fs as pafs

    fs, path = filesystem(where)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(where: Location | str) -> bytes:
    """The file's content; FileNotFoundError when there is none (locally and in a bucket)."""
    if not is_remote(where):
        return Path(where).read_bytes()
    fs, path = filesystem(where)
    try:
        with fs.open_input_stream(path, compression=None) as f:  # as stored, as locally: a .gz stays gzipped
            return f.read()
    except OSError as exc:
        if not exists(where):
            raise FileNotFoundError(str(where)) from exc
        raise


def read_text(where: Location | str) -> str:
    return read_bytes(where).decode()


def write_bytes(where: Location | str, data: bytes) -> None:
    """Write a whole file: locally through a temporary name and a rename, in a bucket by one PUT;
    either way a reader sees the old content or the new, never half of it."""
    if not is_remote(where):
        target = Path(where)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        tmp.replace(target)
        return
    fs, path = filesystem(where)
    with fs.open_output_stream(path, compression=None) as f:  # pyarrow would gzip bytes again for a .gz name
        f.write(data)


def write_text(where: Location | str, text: str) -> None:
    write_bytes(where, text.encode())


@contextmanager
def open_text_output(where: Location | str) -> Iterator[IO[str]]:
    """A text file to stream into (serving lists of millions of lines), gzipped when its name ends
    in ``.gz``: at the fastest level, since it is written once and read once, by publish."""
    if not is_remote(where):
        Path(where).parent.mkdir(parents=True, exist_ok=True)
        with (gzip.open(where, "wt", compresslevel=1, encoding="utf-8") if str(where).endswith(".gz")
              else open(where, "w", encoding="utf-8")) as f:
            yield f
        return
    fs, path = filesystem(where)
    # pyarrow picks the codec from the name (compression="detect"): gzip for ".gz"
    with fs.open_output_stream(path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as f:  # type: ignore[arg-type]
        yield f


@contextmanager
def open_text_input(where: Location | str, errors: str = "strict") -> Iterator[IO[str]]:
    """A text file to read line by line, gunzipped when its name ends in ``.gz``."""
    if not is_remote(where):
        with (gzip.open(where, "rt", encoding="utf-8", errors=errors) if str(where).endswith(".gz")
              else open(where, encoding="utf-8", errors=errors)) as f:
            yield f
        return
    fs, path = filesystem(where)
    # pyarrow's default compression="detect" gunzips a name ending in .gz, as gzip.open above
    with fs.open_input_stream(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", errors=errors) as f:  # type: ignore[arg-type]
        yield f


@contextmanager
def open_binary_input(where: Location | str) -> Iterator[IO[bytes]]:
    """A file's bytes as stored (a .gz file is not gunzipped): what a checksum reads."""
    if not is_remote(where):
        with open(where, "rb") as f:
            yield f
        return
    fs, path = filesystem(where)
    with fs.open_input_stream(path, compression=None) as raw:
        yield raw  # type: ignore[misc]


def file_stat(where: Location | str) -> tuple[int, float] | None:
    """(size in bytes, modification time in epoch seconds) of a file; None when it is not one."""
    if not is_remote(where):
        return (os.path.getsize(where), os.path.getmtime(where)) if os.path.isfile(where) else None
    from pyarrow import fs as pafs

    fs, path = filesystem(where)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return None
    return int(info.size), info.mtime.timestamp() if info.mtime is not None else 0.0


def remote_matches(pattern: str) -> list[str]:
    """What an object-store input names, as Spark names it (``s3a://``), as ``glob.glob`` would
    locally: the object or "folder" (a prefix holding objects) itself when there is one (its name
    may hold glob characters), else the objects and folders of its folder whose names match the
    glob in its last part (a name starting with "." only for a pattern that does), sorted. Glob
    characters before the last part are the caller's to refuse (a listing of the whole bucket
    would be the only way to match them); a folder among the matches too, as for a local input."""
    import fnmatch

    from pyarrow import fs as pafs

    fs, path = filesystem(pattern)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        return [f"s3a://{path}"]
    folder, name = posixpath.split(path)
    if not folder or not name:
        return []
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    names = [posixpath.basename(i.path.rstrip("/")) for i in infos]
    return sorted(f"s3a://{folder}/{n}" for n in names
                  if fnmatch.fnmatchcase(n, name) and (name.startswith(".") or not n.startswith(".")))


def listdir(where: Location | str) -> list[str]:
    """Names directly under ``where`` (files and folders); [] when it does not exist."""
    from pyarrow import fs as pafs

    fs, path = filesystem(where)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)


def remove_tree(where: Location | str) -> None:
    """Delete a folder (or prefix) and everything under it; no error when it is not there."""
    from pyarrow import fs as pafs

    fs, path = filesystem(where)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        fs.delete_file(path)
    elif is_remote(where) or info.type == pafs.FileType.Directory:
        try:
            fs.delete_dir(path)
        except (FileNotFoundError, OSError):
            if exists(where):
                raise


def read_parquet(where: Location | str):
    """A Parquet folder written by Spark, as one Arrow table (on the driver: what the caller needs)."""
    import pyarrow.parquet as pq

    fs, path = filesystem(where)
    return pq.read_table(path, filesystem=fs)


def scratch(base: Location | str, prefix: str) -> Location:
    """A fresh, unique location under ``base`` for intermediate files (the caller removes it)."""
    return join(base, f"{prefix}{uuid.uuid4().hex[:12]}")


# --- Spark ---------------------------------------------------------------------------------------

def spark_uri(where: Location | str) -> str:
    """The location as Spark's Hadoop filesystems name it (``s3://`` and ``s3n://`` become ``s3a://``)."""
    text = str(where)
    for scheme in ("s3://", "s3n://"):
        if text.startswith(scheme):
            return "s3a://" + text[len(scheme):]
    return text


def s3a_jars(local_dir: Path | None = None) -> list[str]:
    """hadoop-aws and its AWS SDK bundle, as ``bin/services install spark`` gathers them (Maven Central)."""
    if local_dir is None:
        from core.settings import get_settings

        local_dir = get_settings().local_dir
    folder = Path(local_dir) / "opt" / f"spark-s3a-{HADOOP_AWS_VERSION}"
    return sorted(str(p) for p in folder.glob("*.jar"))


def spark_conf(locations: list[Location | str]) -> dict[str, str]:
    """Spark settings for these locations: the s3a filesystem when one of them is in a bucket.

    ``spark.jars`` works for a session started in-process (tests, benchmarks); spark-submit needs
    ``--jars`` (bin/pipeline and the DAG pass :func:`s3a_jars` through spark_jobs.jvm_jar.submit_jars), the
    rest applies either way.
    """
    if not any(is_remote(w) for w in locations):
        return {}
    jars = s3a_jars()
    if not jars:
        raise RuntimeError(f"{[str(w) for w in locations if is_remote(w)]} need hadoop-aws "
                           f"{HADOOP_AWS_VERSION}; run bin/services install spark")
    key, secret = _credentials()
    endpoint = s3_endpoint()
    prefix = "spark.hadoop.fs.s3a."
    return {
        "spark.jars": ",".join(jars),
        prefix + "endpoint": endpoint,
        prefix + "path.style.access": "true" if _path_style() else "false",
        prefix + "connection.ssl.enabled": "true" if endpoint.startswith("https://") else "false",
        prefix + "access.key": key,
        prefix + "secret.key": secret,
        prefix + "endpoint.region": env_str("AWS_REGION", "us-east-1"),
        prefix + "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        # Spark's commit renames task output (copy + delete on S3): v2 renames each file once, where v1
        # copies it twice (task commit, then job commit).
        "spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version": "2",
    }
