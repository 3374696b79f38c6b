"""Publish gate: make a trained model version the one the workers, Celery and the site use.

    spark-submit spark_jobs/publish.py --version V [--run-id R] [--force]

The version is published only if its validation NDCG@10 beats popularity and is at least the
currently published version's, all three measured on the candidate's validation split in the
candidate's training run (train.py folds that split's users into the current version, as the
workers do, with an exact top-k as the candidate's); a missing or non-finite number fails. The
same users and items, but not an unbiased duel: the current version was fitted on all the data of
its day, so it has seen most of these held-out pairs, which the candidate never has. Its number is
high by that much (EASE's item-item weights most: they are built from those very pairs), and the
gate errs toward keeping it; a candidate that passes is at least as good. Otherwise
the run records why and the old version stays. ``--force`` publishes anyway (the first model of a
fresh install) and records that it was forced. Publishing loads the version's top-N lists and
similar items into MongoDB collections of that version's own, which nobody reads yet, and rebuilds
the popular and trending lists (core.popular, the same code Celery runs), then moves the
``CURRENT`` pointer atomically: readers resolve those collections through ``CURRENT``
(core/mongo.py), so the model and its lists switch together and a crash before the move leaves
the old version whole. Re-publishing the current version finishes what a publish killed after the
move left undone (its published record, dropping older lists) and otherwise changes nothing.

``CURRENT`` is the one announcement of a new model, read by everyone who cares: the workers
reload from it (kafka_workers/model_holder.py), Celery's ``check_model`` queues the re-scoring
from it, and the site's and workers' cache keys carry it (core/list_state.py), so caches built
under the old model are never read again. It is the one place that cannot disagree with what is
served: it is written last, atomically, only after the version's files and lists are complete,
and every program reads it where it reads the model. A message (the Kafka topic nobody read) or a
counter (the Redis cache generation Celery bumped) was a second copy that could be lost, arrive
before the lists, or say another thing than ``CURRENT``; they are gone.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

from core import artifacts, mongo, popular, rating_history, shopper_controls, stored_lists
from core.env import env_int
from spark_jobs import common, reconcile
from spark_jobs.common import run_id_arg

PUBLISH_INSERT_THREADS = env_int("PUBLISH_INSERT_THREADS", 3)  # batches of lists in flight


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def gate(candidate: dict, current: str | None) -> tuple[bool, str]:
    """(publish?, reason) from the candidate's validation metrics and the current version's name.

    The current version's number must come from the candidate's run (``validation.current``, its
    fold-in score on the candidate's split); a number the current version got on another split,
    possibly on other data, says nothing about which of the two serves better.
    """
    val = candidate.get("validation") or {}
    ours, pop = val.get("ndcg@10"), val.get("popularity_ndcg@10")
    if ours is None or pop is None:
        return False, "the candidate has no validation metrics"
    if not _finite(ours) or not _finite(pop):
        return False, f"a validation metric is not a number: NDCG@10 {ours!r}, popularity {pop!r}"
    if ours <= pop:
        return False, f"validation NDCG@10 {ours:.4f} does not beat popularity {pop:.4f}"
    if current is not None:
        scored = val.get("current") or {}
        if scored.get("version") != current:
            return False, (f"the candidate's run did not score the current version {current} on its validation "
                           f"split (it scored {scored.get('version') or 'none'}); train again")
        cur = scored.get("ndcg@10")
        if not _finite(cur):
            return False, f"the current version's validation NDCG@10 on the candidate's split is {cur!r}"
        if ours < cur:
            return False, f"validation NDCG@10 {ours:.4f} is below the current version's {cur:.4f} on the same split"
    return True, f"validation NDCG@10 {ours:.4f} beats popularity {pop:.4f}" + (
        "" if current is None else " and is at least the current version's on the same split")


def load_serving_lists(version: str) -> dict[str, int]:
    """Top-N per batch user and similar items per product into the version's own collections.

    Rewritten whole on a re-run (a crashed publish leaves them half full, and unread). Lists of
    accounts deleted since training are left out, and products a user marked "not interested"
    since then are left out of theirs. Reconciled: the files' lists = the inserts the server
    acknowledged + the lists left out (acknowledged, not counted back: FerretDB v1 counts by
    reading every document, 9.6M lists at the big run's size).
    """
    from core.recommend import without_excluded

    d = artifacts.models_dir() / version
    now = time.time()
    db = mongo.get_db()
    deleted, excluded = rating_history.deleted_user_ids(db=db), shopper_controls.all_exclusions(db=db)
    def user_lists(tally: dict[str, int]):
        for doc in artifacts.serving_list_docs(d / artifacts.TOPN_LISTS):
            tally["lines"] += 1
            if not doc["items"] or doc["_id"] in deleted:
                tally["left out"] += 1
                continue
            yield {"_id": doc["_id"], "items": without_excluded(doc["items"], excluded.get(doc["_id"], ())),
                   "model_version": version, "source_event_id": None, "updated_at": now}

    def item_lists(tally: dict[str, int]):
        for doc in artifacts.serving_list_docs(d / artifacts.SIMILAR_LISTS):
            tally["lines"] += 1
            yield doc

    out = {}
    for logical, lists in ((mongo.BATCH_RECOMMENDATIONS, user_lists), (mongo.SIMILAR_ITEMS, item_lists)):
        name = mongo.per_version_name(logical, version)
        db.drop_collection(name)
        db.create_collection(name)
        tally = {"lines": 0, "left out": 0}
        stored = mongo.insert_docs(name, lists(tally), db=db, threads=PUBLISH_INSERT_THREADS)
        if tally["lines"] != stored + tally["left out"]:
            raise reconcile.Unbalanced(f"publish: {name}: {tally['lines']:,} lists in the files, the server "
                                       f"acknowledged {stored:,} and {tally['left out']:,} were left out")
        out[logical] = stored
    return out


def drop_lists_of_deleted_accounts(version: str) -> int:
    """Remove the version's batch lists of every deleted account; returns how many went.

    :func:`load_serving_lists` leaves out the accounts deleted when it began; an account deleted
    while the lists were written (or before every process read the new ``CURRENT``) was erased by
    the site from the lists it read then, the replaced version's, and its list in this version's
    would outlive it. Deletes by ``_id`` (1,000 per ``$in``), so doing it for every deleted account
    costs little: one small read of ``deleted_users`` and a command per 1,000 ids.
    """
    ids = sorted(rating_history.deleted_user_ids())
    lists = mongo.get_db()[mongo.per_version_name(mongo.BATCH_RECOMMENDATIONS, version)]
    return sum(lists.delete_many({"_id": {"$in": chunk}}).deleted_count for chunk in mongo.chunks(ids))


def replaced_by(version: str, db=None) -> str | None:
    """The version ``version`` replaced when it was published: the rollback target, kept with it.

    Its record says so (``replaced``) once the publish finished; a publish killed after the
    ``CURRENT`` switch wrote no record yet, and then it is the latest other published version, as
    the publish would have recorded. Every publish job protects it from pruning, not only the run
    that published (a rejected or unchanged publish has no ``replaced`` of its own).
    """
    db = db if db is not None else mongo.get_db()
    record = db[mongo.MODEL_VERSIONS].find_one({"_id": version}) or {}
    if record.get("published") and "replaced" in record:
        return record["replaced"]
    previous = db[mongo.MODEL_VERSIONS].find_one({"published": True, "_id": {"$ne": version}},
                                                 sort=[("published_at", -1)])
    return previous["_id"] if previous else None


def lists_stored(version: str, db=None) -> bool:
    """Whether this MongoDB holds the version's serving-list collections. ``CURRENT`` lives with
    the artifacts, not in MongoDB: a database restored, replaced or new under kept artifacts has
    a current version without its lists, and the site would show no lists at all."""
    names = set((db if db is not None else mongo.get_db()).list_collection_names())
    return all(mongo.per_version_name(logical, version) in names for logical in mongo.PER_MODEL_VERSION)


def load_lists(version: str) -> dict:
    """Everything a published version serves from MongoDB: its own lists and the popular lists
    (new and anonymous visitors see these; Celery beat only keeps them fresh afterwards)."""
    loaded = load_serving_lists(version)
    loaded["popular_lists"] = popular.refresh_all()
    return loaded


def restore_lists(version: str) -> dict:
    """Load the current version's lists into a database that lacks them, as publish loads a new
    version's; no switch: ``CURRENT`` names it already."""
    loaded = load_lists(version)
    mongo.forget_pointers()  # a reader's cached "no such collection" for the lists
    return loaded


def finish_current(version: str, restored: dict | None = None) -> dict:
    """The steps after the ``CURRENT`` switch, for a version ``CURRENT`` names already.

    A publish killed between the switch and its records (an Airflow retry, ``bin/pipeline --resume``)
    would otherwise leave the version unrecorded as published and the older versions' lists in
    MongoDB for ever. Both steps are idempotent, so a plain re-publish of the current version does
    them again harmlessly and stays "unchanged". The lists of the version published before it
    (the latest other published one) stay, as after a publish that was not interrupted.
    ``restored``: what :func:`restore_lists` loaded, when the database lacked the lists.
    """
    db = mongo.get_db()
    replaced = replaced_by(version, db=db)
    dropped = stored_lists.drop_serving_lists(keep={version, replaced} - {None}, db=db)
    drop_lists_of_deleted_accounts(version)  # a publish killed before it did this
    if restored is None and (db[mongo.MODEL_VERSIONS].find_one({"_id": version}) or {}).get("published"):
        print(f"publish: {version} is already the published version; nothing to do")
        return {"status": "unchanged", "version": version, "decision": "already the published version",
                **({"loaded": {"dropped": dropped}} if dropped else {})}
    decision = ("its lists were missing from this MongoDB (a new or restored database): loaded them again"
                if restored is not None else "finished a publish that stopped after the CURRENT switch")
    mongo.record_model_version(version, {"published": True, "published_at": time.time(), "decision": decision,
                                         "replaced": replaced}, db=db)
    print(f"publish: {version} is current; {decision} (replaced {replaced or 'no version'}, dropped {dropped})")
    return {"status": "published", "version": version, "replaced": replaced, "decision": decision,
            "loaded": {**(restored or {}), "dropped": dropped}}


class VersionGone(FileNotFoundError):
    """The version to publish has no files (pruned, or never complete): nothing was changed."""


def _check_present(version: str) -> None:
    """Refuse a version whose folder is gone, saying why, before anything changes."""
    if artifacts.has_version(version):
        return
    doc = mongo.get_db()[mongo.MODEL_VERSIONS].find_one({"_id": version}, {"pruned_at": 1}) or {}
    if doc.get("pruned_at"):
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(doc["pruned_at"])))
        raise VersionGone(f"model version {version} was pruned at {when} (its files are deleted: publish keeps "
                          f"MODEL_VERSIONS_KEPT={artifacts.VERSIONS_KEPT} versions besides the current one and the "
                          f"one it replaced), so it cannot be made current")
    raise VersionGone(f"model version {version} has no complete folder under {artifacts.models_dir()}, "
                      f"so it cannot be made current")


def pruned_unmarked() -> set[str]:
    """The versions MongoDB records without ``pruned_at`` whose folders are gone: those a publish
    pruned before it marked what it pruned (17b2c23), which the admin listed as if they could be
    made current. The next prune marks them, with its own time (when they went is not known). One
    existence check per unmarked record: after that prune, only the versions kept are unmarked."""
    found = mongo.get_db()[mongo.MODEL_VERSIONS].find({"pruned_at": {"$exists": False}}, {"_id": 1})
    return {str(doc["_id"]) for doc in found if not artifacts.has_version(str(doc["_id"]))}


def publish(version: str, force: bool = False) -> dict:
    current = artifacts.current_version()
    if current == version:
        return finish_current(version, None if lists_stored(version) else restore_lists(version))
    _check_present(version)
    candidate = artifacts.load_metrics(version)
    ok, reason = gate(candidate, current)
    if not ok and not force:
        mongo.record_model_version(version, {"published": False, "decision": f"kept {current}: {reason}"})
        print(f"publish: NOT publishing {version}: {reason}; {current or 'no version'} stays current")
        return {"status": "rejected", "version": version, "current": current, "decision": reason}
    decision = reason if ok else f"forced despite: {reason}"
    loaded = load_lists(version)  # before the model goes live: never a published model without them
    artifacts.publish(version)  # the one switch: the model and its lists (core/mongo.py resolves them by it)
    switched = time.monotonic()
    mongo.forget_pointers()
    # the replaced version's lists stay for readers that still hold the old CURRENT for a moment
    loaded["dropped"] = stored_lists.drop_serving_lists(keep={version, current} - {None})
    # once no process erases an account from the old version's lists any more (their cached CURRENT
    # expired), the accounts deleted since the lists were read lose theirs in this version's
    time.sleep(max(0.0, switched + mongo.RETIRE_GRACE_S - time.monotonic()))
    loaded["lists_of_deleted_accounts"] = drop_lists_of_deleted_accounts(version)
    mongo.record_model_version(version, {"published": True, "published_at": time.time(), "decision": decision,
                                         "replaced": current})
    print(f"publish: {version} is now current ({decision}); loaded {loaded}")
    return {"status": "published", "version": version, "replaced": current, "decision": decision, "loaded": loaded}


def prune_old_versions(version: str, record: dict) -> None:
    """After a publish job (published, rejected or unchanged): delete the versions no one can need
    any more (beyond MODEL_VERSIONS_KEPT; never the current one, the one it replaced, nor
    ``version``), mark them pruned, and say so in ``record``. Housekeeping: its failure must not
    fail a publish done, so it goes into the record (``prune_error``) instead."""
    current = artifacts.current_version()
    try:
        protect = {current, version, *([replaced_by(current)] if current else [])} - {None}
        record["pruned"] = artifacts.prune_versions(protect)
        # the records stay, with their metrics, marked: the admin offers no rollback to them
        mongo.record_pruned_versions({artifacts.folder_version(name) for name in record["pruned"]})
    except Exception as exc:  # noqa: BLE001
        print(f"publish: old model versions not deleted or not marked pruned: {exc}", file=sys.stderr)
        record["prune_error"] = f"{exc.__class__.__name__}: {exc}"
    try:  # so are those of versions pruned before publish marked them: apart, so that one storage
        # error of their checks leaves the versions just pruned marked still
        mongo.record_pruned_versions(pruned_unmarked())
    except Exception as exc:  # noqa: BLE001  the next publish tries again
        print(f"publish: versions pruned earlier not marked pruned: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run_id_arg(parser)
    parser.add_argument("--version", required=True)
    parser.add_argument("--force", action="store_true", help="publish even if the gate says no")
    args = common.parse_args(parser, argv)
    # no Spark session, but the batch lock (the lists and CURRENT of every run) and the records of
    # every job: a publish killed half-way leaves "started", so a resume runs it again
    with common.job_records("publish", args.run_id, {"version": args.version, "force": args.force},
                            failures=(reconcile.Unbalanced,),  # lists lost on the way; CURRENT did not move
                            permanent=(VersionGone,)) as job:  # pruned or never complete: no retry helps
        job.record = publish(args.version, force=args.force)
        prune_old_versions(args.version, job.record)
    return job.exit_status


if __name__ == "__main__":
    sys.exit(main())
