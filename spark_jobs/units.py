"""Input units and the ledgers that make load, clean and mongo_load incremental and resumable.

One input file is one unit: load reads it as a whole or not at all, and its Parquet lives in its own
partition (``raw/<kind>/unit=<file name>``), so loading a new or changed file replaces that
partition and leaves the others alone. A unit is identified by its file name (one from another
folder replaces it, said in the log: :func:`loaded_elsewhere`) and fingerprinted by the SHA-256 of its bytes (measured: ~0.5 s per 280 MB of gzip on this machine, a small fraction of
loading it, so no size+mtime shortcut is needed). Clean and mongo_load work per category (all units
of one category, e.g. a reviews file and its metadata file): a category is redone when the
fingerprints of its units changed since that stage last finished it.

A ledger is a small JSON document, written only after the stage's output is complete, so a stage
killed half-way is simply redone (every stage overwrites exactly its own partitions, or upserts by
``_id``); before a stage replaces partitions the ledger lists, it drops them from it (:func:`forget`).
The load and clean ledgers live beside their output (``<dir>/_ledger.json``; the leading
underscore keeps Spark and pyarrow from taking it for data); mongo_load's lives in the MongoDB
database it describes (``spark_jobs.mongo_load.INGEST_LEDGER``). Fingerprints cover the code too:
a ledger entry of another load.LOAD_VERSION or clean.CLEAN_VERSION is not done.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core import storage
from core.inputs import input_files, local_path

if TYPE_CHECKING:
    from pyspark.sql import Column

LEDGER_FILE = "_ledger.json"
_CHUNK = 4 << 20


@dataclass(frozen=True)
class Unit:
    name: str          # the file name: the unit's key everywhere
    path: str          # what Spark reads
    category: str      # from the file name (amazon2018_meta_gift_cards.jsonl.gz -> Gift Cards)
    sha256: str
    size: int


# The category a data file's name carries, in one definition that both the Python function here
# (list_units: a unit's category) and the Spark column (:func:`category_from_path`: a line's, from
# its source file) are built from, so the two cannot drift. The patterns are read alike by Java's regex
# (what Spark's regexp_extract / regexp_replace use) and Python's re with re.ASCII (Java's \d and
# (?i) are ASCII-only); the replacements are plain text (no "$" or "\", which the two read
# differently). Then each word gets Spark's initcap.
FILE_NAME_PATTERN = r"([^/]+)$"  # group 1: the file name of a path or URI ("" when it ends in "/")
FILE_CATEGORY_STEPS: tuple[tuple[str, str], ...] = (
    (r"(\.jsonl?|\.json)?(\.gz)?$", ""),                  # the extension
    (r"^(amazon\d{4}_)?(reviews_|meta_)?", ""),            # this repository's year prefix; the kind
    (r"(?i)(_5)?(_PARTIAL|_FIRST\d+)?(_raw)?$", ""),       # 5-core; this repository's excerpt marks
    ("_", " "),                                            # Clothing_Shoes_and_Jewelry: words
)


def category_of(file_name: str) -> str:
    """The category a file's name carries ('.../amazon2018_meta_gift_cards.jsonl.gz' -> 'Gift Cards'),
    from FILE_NAME_PATTERN and FILE_CATEGORY_STEPS: the same result as :func:`category_from_path`."""
    found = re.search(FILE_NAME_PATTERN, file_name, flags=re.ASCII)
    base = found.group(1) if found else ""  # regexp_extract's "" when nothing matches
    for pattern, replacement in FILE_CATEGORY_STEPS:
        base = re.sub(pattern, replacement, base, flags=re.ASCII)
    return initcap(base)


def category_from_path(col: Column) -> Column:
    """'.../amazon2018_meta_gift_cards.jsonl.gz' -> 'Gift Cards' (the file names carry the category):
    :func:`category_of` as a Spark column, built from the same FILE_NAME_PATTERN and
    FILE_CATEGORY_STEPS, for rows that carry only their source file (load's and clean's)."""
    # imported here: bin/pipeline's run_records imports this module without needing Spark
    from pyspark.sql import functions as F

    base = F.regexp_extract(col, FILE_NAME_PATTERN, 1)
    for pattern, replacement in FILE_CATEGORY_STEPS:
        base = F.regexp_replace(base, pattern, replacement)
    return F.initcap(base)


def initcap(text: str) -> str:
    """Spark's ``initcap``: every word (split on " ") with its first letter upper case and the rest
    lower case (the same for the names categories have; Java's title case of a few letters such
    as "ß" or "ǆ" differs from Python's upper case)."""
    return " ".join(w[:1].upper() + w[1:].lower() for w in text.split(" "))


def sha256_file(path: str) -> str:
    """The checksum of a local file or an object's bytes (an object is read through once)."""
    h = hashlib.sha256()
    with storage.open_binary_input(path) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_names(names: Iterable[str]) -> list[str]:
    """The file names ``names`` stand for (``load --remove`` takes a path or a name: units are keyed
    by file name), each once, in order."""
    return list(dict.fromkeys(os.path.basename(name) for name in names))


class NoInputFile(FileNotFoundError):
    """An input names no file (a glob that matches none, a path that is not there): load fails the
    same way on a retry (spark_jobs/common.run_job: a permanent failure)."""


class InputsRefused(ValueError):
    """Inputs load refuses as they are given (not local, two of one file name, a file both loaded
    and removed): a retry refuses them again."""


def list_units(inputs: list[str]) -> list[Unit]:
    """The files ``inputs`` (files or globs) name, sorted, each with its checksum.

    A path that exists is that file, even when its name holds glob characters
    (``reviews_toys[1].jsonl``); otherwise a glob must match at least one file: a pattern that
    matches nothing is a mistake (a typo, the wrong folder), not a run over no data. The rest is
    refused (a URI other than s3a://, a folder, two inputs of one file name: they would be one
    unit) by core.inputs.input_files, the rules the DAG's wait for the inputs applies too.
    """
    found = input_files(inputs)
    if found.refusal:
        raise InputsRefused(f"load: {found.refusal}")
    if found.missing:
        raise NoInputFile(f"load: no input file matches {', '.join(found.missing)}")
    units = []
    for f in found.files:
        name, stat = os.path.basename(f), storage.file_stat(f)
        if stat is None:  # gone since it was listed
            raise NoInputFile(f"load: {f} is gone")
        units.append(Unit(name=name, path=f, category=category_of(name), sha256=sha256_file(f), size=stat[0]))
    return sorted(units, key=lambda u: u.name)


def loaded_elsewhere(entries: dict[str, dict], given: Iterable[Unit]) -> dict[str, str]:
    """File name -> the other path a ledger entry says that name was loaded from, for the ``given``
    units whose name was loaded from another folder before.

    Units are keyed by file name, so ``/part2/reviews_Books.json`` replaces the
    ``/part1/reviews_Books.json`` an earlier run loaded: right for a re-download kept somewhere
    else, a mistake for two different files of one name, which only the caller's log can tell
    apart (within one run, two such inputs are refused: :func:`list_units`).
    """
    return {u.name: entries[u.name]["path"] for u in given
            if entries.get(u.name, {}).get("path") not in (None, u.path)}


def read_ledger(directory: str) -> dict[str, Any]:
    path = storage.location(local_path(directory)) / LEDGER_FILE
    return json.loads(storage.read_text(path)) if storage.is_file(path) else {}


def write_ledger(directory: str, ledger: dict[str, Any]) -> None:
    """Replace the ledger atomically (a crash leaves the old one or the new one, never half): a
    rename on a local disk, one PUT in a bucket (DATA_DIR=s3a://..., core/storage.py)."""
    storage.write_text(storage.location(local_path(directory)) / LEDGER_FILE,
                       json.dumps(ledger, indent=2, sort_keys=True))


def forget(directory: str, ledger: dict[str, Any], key: str, names: Iterable[str]) -> None:
    """Drop ``names`` from ``ledger[key]`` (in place) and write the ledger, when it held any of them.

    Called before their output is replaced: a replace is not atomic (spark_jobs.hadoop_fs.move
    deletes the old partition and then renames the staged one in, object by object on s3a), so a
    stage killed in between would leave a ledger claiming data that is gone or partial, and a next
    run would skip it for good whenever the input is unchanged (``--force``, a category cleaned
    again for its dependents). Forgotten first, it is redone.
    """
    entries = ledger.get(key, {})
    gone = [n for n in names if n in entries]
    for name in gone:
        del entries[name]
    if gone:
        write_ledger(directory, ledger)


# Ledgers written before load and clean had versions are the first version's: at version 1 an entry
# and a fingerprint are what they were then, so upgrading does not load, clean and reload everything.
FIRST_VERSION = 1


def category_fingerprints(units: dict[str, dict], version: int) -> dict[str, str]:
    """category -> one fingerprint of all its units (name, checksum and the version of load that
    loaded it) and of ``version`` (clean's: spark_jobs.clean.CLEAN_VERSION), from a load ledger. A
    new file, a changed one or one processed differently makes another fingerprint: clean redoes
    the category, and mongo_load, comparing the clean ledger's fingerprints with its own, reloads."""
    by_cat: dict[str, list[str]] = {}
    for name, u in units.items():
        loaded_by = u.get("version", FIRST_VERSION)
        by_cat.setdefault(u["category"], []).append(
            f"{name}:{u['sha256']}" + (f":{loaded_by}" if loaded_by != FIRST_VERSION else ""))
    header = [] if version == FIRST_VERSION else [f"clean version {version}"]
    return {c: hashlib.sha256("\n".join([*header, *sorted(v)]).encode()).hexdigest() for c, v in by_cat.items()}
