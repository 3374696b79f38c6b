"""The rules of a rating event, written once: for the events of one poll together
(:func:`handle_batch`, with MongoDB's round trips per user and per batch instead of per event), for
one event on its own (a batch of one: ``kafka_workers.process``), and what the batches leave to do
afterwards for many at once (:class:`Tail`, :func:`finish`).

Every step is idempotent (events claimed by id, ratings inserted by id, each history change by the
rule every history writer follows, lists replaced whole), so a redelivered event after a crash
changes nothing; that is what lets the worker commit offsets only after MongoDB has the result and
still store each rating exactly once. The shopper's controls are events too (``core.events``
version 2): removing a rating, "not interested" and taking that back ("interested again") change the
history or the exclusions and then re-solve the list exactly like a rating; ``delete_account``
removes what MongoDB and Redis keep for the user (:func:`forget_user`), and anything that arrives
for a deleted account afterwards is dropped.

The worker falls back to batches of one, each message on its own, when a batch fails: that
isolates the message at fault (``kafka_workers.polls`` and ``kafka_workers.retry``).
"""
from __future__ import annotations

import logging
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from core import (cancellation, catalog, erasure, events, list_state, locking, mongo, rating_history, recommend,
                  shopper_controls, stored_lists, trending)
from core.artifacts import Model
from core.events import RatingEvent
from core.settings import get_settings
from core.thread_pools import thread_pool
from kafka_workers.exclusions_cache import may_have_exclusions, users_without_exclusions
from kafka_workers.outcomes import Outcome

log = logging.getLogger(__name__)


class HistoriesReloaded(RuntimeError):
    """A reload switched ``user_history`` between a batch's read of its users' histories and its
    write: the batch raises before writing them, and the worker handles it one event at a time,
    which reads the new generation (once per reload, rare; ``kafka_workers.process.handle_event``
    reads again when it meets one itself)."""


class _PopularOnce:
    """The popular products, read at most once per batch (the longest list any user needed)."""

    def __init__(self) -> None:
        self.items: list[dict] | None = None
        self.limit = 0

    def __call__(self, limit: int) -> list[dict]:
        if self.items is None or (len(self.items) < limit and len(self.items) == self.limit):
            self.items, self.limit = catalog.compute_popular(limit=limit), limit
        return self.items[:limit]



@dataclass
class Tail:
    """What the worker's batches leave to do once their lists are announced, done for many batches
    at once by :func:`finish`: give their users' locks back and insert their ratings.

    Done in each batch, they were two more round trips that the next rating waited for (traced with
    bench/worker_trace.py, docs/benchmarks.md). Kept here instead, the locks stay
    taken (a later batch of the same users takes only the others) and the ratings wait, for about
    ``TAIL_MAX_S`` at most (a batch in progress then ends first; less when the worker is idle or its
    offsets are due for a commit), and always before anything that must see them: a commit
    (commit-after-write), a rebalance, an account's deletion, the one-at-a-time path. Other writers
    of those users (a Celery re-scoring) wait that much longer for the lock. A crash before
    :func:`finish` leaves the offsets uncommitted: the redelivery finds its claims, reads no rating
    and applies the batches again, as after a crash before the ratings' insert; the locks go stale
    (``core.locking.LOCK_STALE_S``, far above ``TAIL_MAX_S``). State is real: held locks, waiting
    rows.
    """

    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    locks: set[str] = field(default_factory=set)
    ratings: list[dict[str, Any]] = field(default_factory=list)
    reloads: list[tuple[str, list[RatingEvent], float]] = field(default_factory=list)  # for _after_reload
    opened: float | None = None  # time.monotonic() when it stopped being empty: its locks are younger

    def __bool__(self) -> bool:
        return bool(self.locks or self.ratings or self.reloads)

    def open(self) -> None:
        if self.opened is None:
            self.opened = time.monotonic()

    def due(self) -> bool:
        """Kept for ``TAIL_MAX_S`` already: the worker finishes it before its next poll."""
        return self.opened is not None and time.monotonic() - self.opened >= TAIL_MAX_S


TAIL_MAX_S = 0.2  # how long a batch's locks and ratings may wait for :func:`finish`


def finish(tail: Tail) -> None:
    """Do what :class:`Tail` holds: locks given back, then the ratings inserted (already
    processed; those stored before by a worker that died marked processed), then the check for a
    reload that switched the histories under those batches. Raises on a MongoDB error, keeping what
    is not done yet (the locks go stale if it never is)."""
    db = mongo.get_db()
    if tail.locks:
        locking.release_locks(tail.locks, tail.token, db=db)
        tail.locks.clear()
    if tail.ratings:
        # stored before (by a worker that died): mark those processed
        earlier = rating_history.store_ratings(tail.ratings)
        rating_history.mark_ratings_processed(
            {d["_id"]: d["model_version"] for d in tail.ratings if d["_id"] in earlier})
        _mark_for_trending(tail.ratings, db)
        tail.ratings.clear()
    while tail.reloads:
        _after_reload(db, *tail.reloads[0])
        tail.reloads.pop(0)
    tail.opened = None


def _mark_for_trending(ratings: list[dict[str, Any]], db) -> None:
    """Mark the users of these stored ratings that change a history for the trending refresh.

    After the histories' write and the ratings' insert: a refresh that takes the mark reads the new
    history, and a rebuild that scanned ``ratings`` before this insert is corrected by the next
    refresh. Every user applied, changed or not: a redelivery after a crash past the histories'
    write changes nothing, and must still mark them."""
    trending.mark_changed([d["user_id"] for d in ratings
                           if d.get("action", events.RATE) in rating_history.HISTORY_ACTIONS], db=db)


def _keep_unprocessed(applied: list[RatingEvent], db) -> None:
    """Store a batch's applied events unprocessed and mark them for trending, when their lists
    failed once the histories were written (a fold-in numpy cannot solve, a lock lost before the
    lists' write): the histories hold them, so ``ratings`` and trending must too (README: a dead
    letter whose list could not be computed "is stored, in the history and marked for trending").
    The worker's retry, one event at a time, or a replay finds them stored and not processed, and
    finishes them as after a worker died. Called before the batch raises."""
    docs = [rating_history.rating_doc(e.to_dict()) for e in applied]
    rating_history.store_ratings(docs, db=db)
    _mark_for_trending(docs, db)


def handle_batch(batch: list[RatingEvent], model: Model | None, tail: Tail | None = None) -> list[Outcome]:
    """Process valid events together (a poll's, or one event on its own); one outcome per event,
    in order.

    The same effects as these events handled one at a time, in order (a batch of one each,
    tests/integration/test_worker_batches.py), with MongoDB's round trips per user and per batch
    instead of per event: the events are grouped by user (a user's events keep
    their order: one partition, one key), each user's history read once, every event applied to
    it in order by the rule of :func:`core.rating_history.apply_history_change`, the history
    written once, the user folded in once, and one list written for the user's last event.
    Claims, histories, lists, locks and ratings go in bulk writes.

    Every event is first claimed by its id (``core.cancellation``: one insert for the batch), which
    also tells a fresh event from one a worker saw before; only those (redeliveries, rare) are read
    back from ``ratings``: a processed one is a duplicate and changes nothing, one stored but not
    processed (a worker died) is finished here. The ratings are inserted last, already processed,
    in one insert, once the lists are announced and the locks released: marking each stored rating
    processed was one FerretDB write transaction per event, ~45% of a batch's time
    (docs/benchmarks.md). A crash before that insert leaves the offsets uncommitted; the
    redelivery finds its claims, reads no rating and applies the batch again, which repeats
    nothing that counts (every step is idempotent). A reload that switched the histories'
    generation while the batch wrote them gets the batch's changes in the new one
    (``_after_reload``), which a ratings-first order used to leave to the reload's replay. Lists
    that fail once the histories are written leave those events stored and marked for trending
    (``_keep_unprocessed``), as a dead letter must.

    With a ``tail`` (the worker's), the locks are given back and the ratings inserted later, for
    many batches at once (:class:`Tail`); without one, before this returns.

    Raises on any error; the worker then handles the batch one event at a time (retries, dead
    letters). Accounts deleted in this batch are handled one event at a time, each a batch of one
    (rare, and ``delete_account`` must come between that user's events exactly where it was sent).
    """
    own_tail = tail is None
    tail = Tail() if tail is None else tail
    try:
        return _apply_batch(batch, model, tail)
    finally:
        if own_tail:
            finish(tail)


def _apply_batch(batch: list[RatingEvent], model: Model | None, tail: Tail) -> list[Outcome]:
    """:func:`handle_batch` up to its tail: the locks taken and the ratings to insert go into ``tail``."""
    outcomes: list[Outcome | None] = [None] * len(batch)
    deleting = {e.user_id for e in batch if e.action == events.DELETE_ACCOUNT}
    if deleting:  # what the batches before left first: nothing of theirs may come after a deletion
        finish(tail)
    # one insert claims the events and locks their users (for history and list; not the accounts
    # deleted here, whose events go one at a time below)
    cancelled, seen_before = _claim_and_lock(batch, {e.user_id for e in batch} - deleting, tail)
    by_user = _group_by_user(batch, outcomes, cancelled, deleting)
    for i, e in enumerate(batch):  # one at a time, in order, for accounts deleted in this batch
        if outcomes[i] is None and e.user_id in deleting:  # (a batch of one finishes its own tail)
            outcomes[i] = forget_user(e) if e.action == events.DELETE_ACCOUNT else handle_batch([e], model)[0]
    if not by_user:
        return outcomes  # type: ignore[return-value]

    db = mongo.get_db()
    history_generation = mongo.physical_name(db, mongo.USER_HISTORY)
    kept = {d["_id"] for d in tail.ratings}  # processed by an earlier batch, not inserted yet: duplicates
    read = _read_users(batch, by_user, seen_before - kept, db, history_generation)
    _set_aside_unknown_and_repeated(batch, by_user, read, kept, outcomes)
    changes = _apply_to_histories(batch, by_user, read, outcomes)
    histories_written = time.monotonic()  # (before the writes: what _after_reload measures from)
    applied = [i for user in changes.histories for i in by_user[user]]
    names = [locking.writer_lock_name(u) for u in changes.histories]
    # tail.opened is set: _claim_and_lock opened the tail before it took these locks (so they are
    # younger). The 0.0 is for the type only; were it ever used, the fence would just ask at once.
    stored = _write_with_lists(changes.histories, changes.excluded, model, changes.new_histories,
                               changes.new_exclusions, {u: batch[by_user[u][-1]].event_id for u in changes.histories},
                               fence=locking.fence(names, tail.token, tail.opened or 0.0, db=db),
                               history_generation=history_generation,
                               lists_failed=lambda: _keep_unprocessed([batch[i] for i in applied], db))
    # announced under the locks, so a re-scoring that waits for one announces its list after
    # ours; and before the ratings' insert, one write fewer between the rating and its list
    # (a client that sees its rating processed finds its list announced)
    list_state.announce_many({u: list_state.version_of(doc) for u, doc in stored.items()})
    now = time.time()
    tail.ratings += [{**rating_history.rating_doc(batch[i].to_dict(), state="processed"), "processed_at": now,
                      "model_version": stored[batch[i].user_id]["model_version"]} for i in applied]
    tail.reloads.append((history_generation, [batch[i] for i in applied], histories_written))
    for i in applied:
        outcomes[i] = Outcome(batch[i], "processed", latency_s=max(0.0, time.time() - batch[i].ts))
    return outcomes  # type: ignore[return-value]


def forget_user(event: RatingEvent) -> Outcome:
    """``delete_account``: the site removed the data already; this repeats it after every event
    the user sent before (same partition, in order), so none of them can have brought any back.

    An erasure stopped by a lock held or lost or a load in the way (``erasure.INTERRUPTIONS``:
    the site's own run met the same when it sent this event) is Celery's ``finish_erasures``' to end,
    as the site's is: retried here it held the partition (three 30 s lock waits) and then went to the
    dead letters, though nothing was wrong with the event."""
    rerun = not erasure.record_deleted_user(event.user_id)  # the site's run (or a killed one of ours) came first
    with locking.writer_lock(event.user_id):
        pass  # a list writer that checked before the mark has written when this is taken; later ones see it
    try:
        erasure.delete_user_data(event.user_id, rerun=rerun)
    except erasure.INTERRUPTIONS as exc:
        log.warning("delete_account of %s: the erasure stopped (%s); finish_erasures ends it", event.user_id, exc)
    list_state.drop(event.user_id)
    return Outcome(event, "processed", latency_s=max(0.0, time.time() - event.ts))


def _group_by_user(batch: list[RatingEvent], outcomes: list[Outcome | None], cancelled: set[str],
                   deleting: set[str]) -> dict[str, list[int]]:
    """{user: indexes of their events in ``batch``, in order}, leaving out the accounts deleted in
    this batch; the events the site cancelled and the second copy of an event (published twice: a
    retried submission, a replay) get their outcome here."""
    seen: set[str] = set()
    by_user: dict[str, list[int]] = {}
    for i, e in enumerate(batch):
        if e.event_id in cancelled:  # skipped and committed past, never stored
            outcomes[i] = Outcome(e, "cancelled", "the site cancelled it: its ack timed out")
        elif e.event_id in seen:
            outcomes[i] = Outcome(e, "duplicate")
        else:
            seen.add(e.event_id)
            if e.user_id not in deleting:
                by_user.setdefault(e.user_id, []).append(i)
    return by_user


class _Read(NamedTuple):
    """What a batch reads before it applies its events: one ``$in`` read per collection."""

    histories: dict[str, dict]  # user_history documents by user
    exclusions: dict[str, dict]  # "not interested" documents, of the users who may have some (or change them)
    known_products: set[str]
    stored_before: dict[str, dict]  # {event id: {state}} of the events a worker claimed before
    deleted: set[str]  # deleted accounts among the batch's users
    no_exclusions: set[str]  # users this process knows have none (the batch adds to it)


def _read_users(batch: list[RatingEvent], by_user: dict[str, list[int]], seen_before: set[str], db,
               history_generation: str) -> _Read:
    """Everything the batch's users need read, for all of them at once (:class:`_Read`)."""
    product_ids = {batch[i].product_id for ids in by_user.values() for i in ids}
    again = [batch[i].event_id for ids in by_user.values() for i in ids if batch[i].event_id in seen_before]
    no_exclusions = users_without_exclusions(db)
    # read unless known to have none; and always for a user the batch adds one to or takes one
    # back for: it replaces the whole document, and another worker may have stored one since this
    # one looked (a rebalance), or the products shown again, which a user "without any" may have
    excluding = {batch[i].user_id for ids in by_user.values() for i in ids
                 if batch[i].action in events.EXCLUSION_ACTIONS}
    # every user is looked up in deleted_users, not only those without a history: a reload may
    # have brought a deleted account's history back, and a late event must not write its list
    lookup = catalog.products_to_look_up(product_ids, db=db)
    docs, exclusion_docs, products, stored_before, deleted = mongo.find_by_ids_many(
        [(history_generation, by_user, None),
         (mongo.EXCLUSIONS, [u for u in by_user if u not in no_exclusions or u in excluding], None),
         (lookup.collection, lookup.ids, {"_id": 1}),
         (mongo.RATINGS, again, {"state": 1}),
         (mongo.DELETED_USERS, by_user, {"_id": 1})])
    known = catalog.existing_products(product_ids, db=db, lookup=lookup, found=products)
    return _Read(docs, exclusion_docs, known, stored_before, set(deleted), no_exclusions)


def _set_aside_unknown_and_repeated(batch: list[RatingEvent], by_user: dict[str, list[int]], read: _Read,
                                    kept: set[str], outcomes: list[Outcome | None]) -> None:
    """Give an outcome to the events of an unknown product (dead letters) and to those processed
    before (a redelivery changes nothing), and take them out of ``by_user``. An event stored but not
    processed (a worker died before writing the list) stays: the batch finishes its job."""
    for user, ids in list(by_user.items()):
        for i in ids:
            e = batch[i]
            if e.product_id not in read.known_products:
                outcomes[i] = Outcome(e, "dead-letter", f"unknown product {e.product_id}")
            elif e.event_id in kept or read.stored_before.get(e.event_id, {}).get("state") == "processed":
                outcomes[i] = Outcome(e, "duplicate")
        by_user[user] = [i for i in ids if outcomes[i] is None]
        if not by_user[user]:
            del by_user[user]  # nothing of this user to apply: no history or list written


class _Changes(NamedTuple):
    """A batch's events applied to its users' histories and exclusions, in memory."""

    histories: dict[str, dict[str, float]]  # {user: {product: rating}} to fold in
    excluded: dict[str, set[str]]  # {user: products never to recommend}
    new_histories: dict[str, dict]  # user_history documents to write (the users whose history changed)
    new_exclusions: dict[str, dict]  # {user: {"items": ...}} to set (the users whose exclusions changed)


def _apply_to_histories(batch: list[RatingEvent], by_user: dict[str, list[int]], read: _Read,
                        outcomes: list[Outcome | None]) -> _Changes:
    """Each user's events applied in order by the rule every history writer follows
    (``rating_history.apply_history_change``); a deleted account's are dropped."""
    changes = _Changes({}, {}, {}, {})
    for user, ids in by_user.items():
        if user in read.deleted:  # the account was deleted: keep nothing of it
            for i in ids:
                rating_history.drop_event(batch[i].event_id)  # stored by a worker that died, if at all
                outcomes[i] = Outcome(batch[i], "dropped", "account deleted")
            continue
        ratings, removed = rating_history.history_entries(read.histories.get(user))
        exclusions = shopper_controls.exclusion_entries(read.exclusions.get(user))
        shown = shopper_controls.shown_again_entries(read.exclusions.get(user))
        changed, excl_changed = False, False  # a new user gets a document with their first rating
        applied: list[rating_history.Change] = []
        for i in ids:
            e = batch[i]
            if e.action in events.EXCLUSION_ACTIONS:  # the rule of every exclusions writer (change_exclusion)
                excl_changed = shopper_controls.apply_exclusion_change(
                    exclusions, shown, e.product_id, e.action == events.NOT_INTERESTED, e.ts) or excl_changed
            else:
                applied.append((e.product_id, rating_history.history_rating(e.action, e.rating), e.ts))
                changed = rating_history.apply_history_change(ratings, removed, *applied[-1]) or changed
        history = read.histories.get(user)
        listed = rating_history.recent_batch_reviews(history, ratings, applied)
        if changed or listed != rating_history.recent_batch_reviews(history):  # a tie took one off the list
            changes.new_histories[user] = rating_history.history_doc(user, ratings, removed, listed)
        if excl_changed:
            changes.new_exclusions[user] = shopper_controls.exclusion_fields(exclusions, shown)
        changes.histories[user] = rating_history.rating_values(ratings)
        changes.excluded[user] = set(exclusions)
        if exclusions:  # before the write: one that fails half-way leaves them to be read again
            may_have_exclusions(user)
        else:
            read.no_exclusions.add(user)
    return changes


def _claim_and_lock(batch: list[RatingEvent], users: set[str], tail: Tail) -> tuple[set[str], set[str]]:
    """Claim the batch's events and take its ``users``' writer locks into ``tail``, in one insert
    (``core.cancellation.claim_batch``); returns (cancelled, seen before).

    The locks ``tail`` holds already are kept. When another writer holds one of the others,
    everything ``tail`` holds is finished first, so this worker never waits while it holds a lock
    (two of them never wait on each other in a circle). The locks are in ``tail`` before the
    insert: one that fails half-way leaves none taken that ``finish`` would not give back.
    Users whose events all turn out cancelled or repeated are locked too, until the tail is done.
    """
    names = {locking.writer_lock_name(u) for u in users}
    wanted = names - tail.locks
    tail.open()
    tail.locks |= wanted
    cancelled, seen_before, locked = cancellation.claim_batch([e.event_id for e in batch], locks=wanted,
                                                              token=tail.token)
    if not locked:
        finish(tail)  # gives back every lock it held, this batch's users' too
        tail.locks |= names
        tail.open()
        locking.take_locks(names, tail.token)
    return cancelled, seen_before


def recommendations_for(history: dict[str, float], model: Model | None, n: int,
                        excluded: set[str] | frozenset[str] = frozenset(),
                        popular: Callable[[int], list[dict]] | None = None) -> tuple[list[dict], str]:
    """Personal top-n by folding the user into the model, else popular items they have not rated;
    never a product in ``excluded`` ("not interested"). ``popular(limit)`` gives the popular
    products (default: read them now; a batch reads them once for all its users)."""
    if model is not None:
        items = recommend.recommend(model, history, n=n, exclude=excluded)
        if items:
            return items, model.version
    most_reviewed = popular or (lambda limit: catalog.compute_popular(limit=limit))
    unrated = [p for p in most_reviewed(n + len(history) + len(excluded))
               if p["product_id"] not in history and p["product_id"] not in excluded]
    return [{**p, "because": None} for p in unrated[:n]], "popular"


LIST_CHUNK = 100  # users whose lists are computed while the ones before them are written


def _write_with_lists(histories: dict[str, dict[str, float]], excluded: dict[str, set[str]], model: Model | None,
                      new_histories: dict[str, dict], new_exclusions: dict[str, dict],
                      source_event: dict[str, str], fence: Callable[[], None],
                      history_generation: str, lists_failed: Callable[[], None]) -> dict[str, dict[str, Any]]:
    """Write a batch's histories and exclusions, then its users' lists; returns the stored lists.
    ``fence()`` goes before each write (``core.locking.fence`` of the users' locks): a batch
    that stalled past their lease while another writer took one over raises and writes no more.

    A batch of more than ``LIST_CHUNK`` users computes its lists while the database writes: the
    histories' write, then each chunk of lists while the next chunk is computed (one writer
    thread, so the writes keep their order). The worker's CPU and the database's had taken turns,
    each idle half the time. A smaller batch (one rating at normal load) writes in this thread:
    there the two threads' turns at Python's lock cost more than the overlap saves (~3 ms of its
    p99, docs/benchmarks.md). The lists' ``as_of`` (core.stored_lists.write_recommendations) is taken
    once the histories are written: the histories as they are then, which they stay until the
    caller's locks go. Taken before, a re-scoring that read the old history while this batch held
    the locks would have the later ``as_of`` and replace our list. Every write has finished when
    this returns, failed or not.

    The histories go to ``history_generation``, the one they were read from, and only while it is
    live (:class:`HistoriesReloaded`): written by the collection's name after a reload moved it,
    each replaced the new generation's history of its user (what the load brought) with the old one.

    ``lists_failed()`` is called before this raises, if the histories were written.
    """
    histories_done = False

    def write_histories() -> None:
        nonlocal histories_done
        fence()
        if mongo.physical_name(db, mongo.USER_HISTORY) != history_generation:
            raise HistoriesReloaded(f"user_history moved from {history_generation} since the batch read it")
        mongo.bulk_upsert(history_generation, new_histories.values())  # seen live just now: not dropped for seconds
        histories_done = True
        mongo.set_by_ids(mongo.EXCLUSIONS, new_exclusions)

    db, n, popular = mongo.get_db(), get_settings().top_n, _PopularOnce()

    def write_lists(lists: list[dict[str, Any]], as_of: float) -> dict[str, dict[str, Any]]:
        fence()
        return stored_lists.write_recommendations_many(lists, as_of)

    def lists_of(users: list[str]) -> list[dict[str, Any]]:
        lists = []
        for user in users:
            items, version = recommendations_for(histories[user], model, n, excluded[user], popular=popular)
            lists.append({"_id": user, "items": items, "model_version": version, "source_event_id": source_event[user]})
        return lists

    def write_all(users: list[str]) -> dict[str, dict[str, Any]]:
        if len(users) <= LIST_CHUNK:
            write_histories()
            as_of = time.time()
            return write_lists(lists_of(users), as_of)
        writer = thread_pool("batch-writes", 1)  # one thread: the writes keep their order
        chunks = [users[lo:lo + LIST_CHUNK] for lo in range(0, len(users), LIST_CHUNK)]
        writes = [writer.submit(write_histories)]
        stored: dict[str, dict[str, Any]] = {}
        try:
            first = lists_of(chunks[0])
            writes[0].result()
            as_of = time.time()
            writes.append(writer.submit(write_lists, first, as_of))
            for chunk in chunks[1:]:
                writes.append(writer.submit(write_lists, lists_of(chunk), as_of))
            for f in writes[1:]:
                stored.update(f.result())
        finally:
            futures.wait(writes)  # nothing of this batch is written after the caller's locks go
        return stored

    try:
        return write_all(list(histories))
    except Exception:
        if histories_done:  # (every write has finished: write_all waited for them)
            lists_failed()
        raise


def _after_reload(db, generation: str, applied: list[RatingEvent], histories_written: float) -> None:
    """Write a batch's history changes again when a reload switched ``user_history`` under it.

    A reload replays the live ratings stored since it began into the new histories
    (``core.rating_history.reapply_live_ratings``) once every process reads the new generation: at
    least ``RETIRE_GRACE_S`` after its switch, while a write into the old generation comes at most
    ``POINTER_TTL_S`` after it (the age of a cached pointer). A batch stores its ratings after
    writing the histories, so one that took less than the difference from its history writes to
    here stored them before that replay read them; a slower one (rare: a loaded machine) checks the
    pointer afresh, and if it moved applies the changes again, by the rule every history writer
    follows, under each user's lock.
    """
    if not applied or time.monotonic() - histories_written < (mongo.RETIRE_GRACE_S - mongo.POINTER_TTL_S) / 2:
        return
    if mongo.live_generation(mongo.USER_HISTORY, db=db) == generation:
        return
    for e in applied:
        if e.action in rating_history.HISTORY_ACTIONS:
            rating_history.change_history(e.user_id, e.product_id, rating_history.history_rating(e.action, e.rating),
                                          e.ts, db=db)
