"""A re-score whose Celery worker shuts down stops between two users, lets go of its running mark
and queues the rest for the next worker, which goes on from the next user. Before, the stop waited
for (or killed) the hours-long task and its marks held the version back until they expired
(RESCORE_TIME_LIMIT_S, 3 h by default). Redis, the model and the per-user work are stand-ins."""
from __future__ import annotations

import contextlib
import signal
import threading
import types

import pytest

from core.cache_keys import LAST_RESCORED_MODEL
from kafka_workers import tasks

USERS = ["u1", "u2", "u3", "u4", "u5"]


class Killed(BaseException):
    """Where the process was killed (what it left in Redis is restored after it)."""


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.ex: dict[str, float | None] = {}  # seconds left
        self.renewed = threading.Event()  # set at each renewal of a running mark
        self.calls: list[str] = []  # the reads, one entry per round trip

    def get(self, key):
        self.calls.append("get")
        return self.data.get(key)

    def mget(self, *keys):
        self.calls.append("mget")
        return [self.data.get(key) for key in keys]

    def set(self, key, value, nx=False, ex=None):
        if nx and key in self.data:
            return None
        self.data[key], self.ex[key] = str(value).encode(), ex
        return True

    def delete(self, *keys):
        for key in keys:
            self.data.pop(key, None)

    def eval(self, script, numkeys, key, token, *lease):
        """The running mark's two scripts (tasks._RENEW_MARK, tasks._DROP_MARK), one step each as in Redis."""
        held = self.data.get(key)
        if script == tasks._RENEW_MARK:
            if held not in (None, token.encode()):
                return 0
            self.set(key, token, ex=lease[0])
            self.renewed.set()
            return 1
        assert script == tasks._DROP_MARK
        if held != token.encode():
            return 0
        self.delete(key)
        return 1

    def after(self, seconds: float) -> None:
        """``seconds`` pass: the keys set to expire within them are gone, the others' time runs down."""
        for key, ex in list(self.ex.items()):
            if ex is not None and ex <= seconds:
                self.data.pop(key, None)
                self.ex.pop(key)
            elif ex is not None:
                self.ex[key] = ex - seconds


@pytest.fixture
def rescore(monkeypatch):
    """The task with stand-ins; ``run.stop_after`` names the user after which the worker is told to stop."""
    r = FakeRedis()
    run = types.SimpleNamespace(redis=r, scored=[], queued=[], stop_after=None, kill_at=None, left=None)

    def rescore_user(model, user):
        if user == run.kill_at:  # SIGKILL: the process ends here, no except or finally runs
            run.left = (dict(r.data), dict(r.ex))
            raise Killed
        run.scored.append(user)
        if user == run.stop_after:
            tasks._worker_shutting_down(sig="SIGTERM", how="Warm", exitcode=0)
        return 1

    monkeypatch.setattr(tasks.redis_client, "client", lambda: r)
    monkeypatch.setattr(tasks.artifacts, "load_model", lambda version: types.SimpleNamespace(version=version))
    monkeypatch.setattr(tasks.artifacts, "current_version", lambda: "v1")
    monkeypatch.setattr(tasks, "_active_users", lambda days: list(USERS))
    monkeypatch.setattr(tasks, "_rescore_user", rescore_user)
    monkeypatch.setattr(tasks.rescore_active_users, "apply_async",
                        lambda args, kwargs: run.queued.append((args, kwargs)))
    monkeypatch.setattr(tasks.rescore_active_users, "delay", lambda *args: run.queued.append((args, {})))
    monkeypatch.setattr(tasks.worker_state, "active_requests", [])
    tasks._STOP.clear()
    yield run
    tasks._STOP.clear()


def test_a_stopping_worker_hands_the_rest_over_and_the_next_goes_on(rescore):
    r = rescore.redis
    r.set(tasks._queued_key("v1"), "1")  # what check_model set when it queued the re-score
    rescore.stop_after = "u2"
    assert tasks.rescore_active_users("v1") == 2
    assert rescore.scored == ["u1", "u2"]
    assert rescore.queued == [(("v1",), {"active_days": 30, "batch_size": 200, "start_after": "u2"})]
    assert r.get(tasks._running_key("v1")) is None  # the next worker may start at once
    assert r.get(tasks._queued_key("v1")) == b"1"  # a copy is queued: check_model queues no other
    assert r.get(LAST_RESCORED_MODEL) is None

    tasks._STOP.clear()  # the next worker
    (args, kwargs), = rescore.queued
    assert tasks.rescore_active_users(*args, **kwargs) == 3
    assert rescore.scored == USERS  # every user once
    assert r.get(LAST_RESCORED_MODEL) == b"v1"
    assert r.get(tasks._running_key("v1")) is None and r.get(tasks._queued_key("v1")) is None


def test_a_run_killed_mid_way_is_queued_again_when_its_lease_runs_out_and_goes_on_from_its_checkpoint(
        rescore, monkeypatch):
    """SIGKILL (or a SIGTERM whose handler a long C call held off past the stop's grace period):
    nothing hands over. Its marks held the version back for RESCORE_TIME_LIMIT_S, and the next run
    started from the first user."""
    monkeypatch.setattr(tasks, "CHECKPOINT_S", 0.0)  # a checkpoint before every user
    r = rescore.redis
    assert tasks.check_model() == "v1"
    rescore.kill_at = "u4"
    (args, kwargs), = rescore.queued
    with pytest.raises(Killed):
        tasks.rescore_active_users(*args, **kwargs)
    r.data, r.ex = rescore.left  # what the killed process left in Redis
    rescore.kill_at = None
    assert tasks.check_model() is None, "queued again while the killed run's lease still runs"
    r.after(tasks.RUNNING_LEASE_S)
    assert tasks.check_model() == "v1", "the killed run's version never queued again"
    args, kwargs = rescore.queued[-1]
    assert tasks.rescore_active_users(*args, **kwargs) == 2
    assert rescore.scored == ["u1", "u2", "u3", "u4", "u5"], "users re-scored twice, or none"
    assert r.get(LAST_RESCORED_MODEL) == b"v1"
    assert tasks.check_model() is None


@pytest.mark.parametrize("taken", [True, False])
def test_a_run_that_stalled_past_its_lease_stops_only_when_another_took_over(rescore, monkeypatch, taken):
    monkeypatch.setattr(tasks, "CHECKPOINT_S", 0.0)
    r = rescore.redis

    def stalled(model, user):
        rescore.scored.append(user)
        if user == "u2":  # its mark expired meanwhile, and (or not) the next run took it
            r.after(tasks.RUNNING_LEASE_S)
            if taken:
                r.set(tasks._running_key("v1"), "another run's token")
        return 1

    monkeypatch.setattr(tasks, "_rescore_user", stalled)
    if taken:
        assert tasks.rescore_active_users("v1") == 2
        assert rescore.scored == ["u1", "u2"]
        assert r.get(tasks._running_key("v1")) == b"another run's token"  # left to its holder
        assert r.get(LAST_RESCORED_MODEL) is None
    else:
        assert tasks.rescore_active_users("v1") == 5  # its own mark again, to the end
        assert rescore.scored == USERS and r.get(LAST_RESCORED_MODEL) == b"v1"


def test_a_hand_over_that_cannot_queue_lets_go_of_both_marks(rescore, monkeypatch):
    def refused(args, kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.rescore_active_users, "apply_async", refused)
    rescore.redis.set(tasks._queued_key("v1"), "1")
    rescore.stop_after = "u1"
    with pytest.raises(ConnectionError):
        tasks.rescore_active_users("v1")
    assert rescore.redis.get(tasks._running_key("v1")) is None  # check_model queues the version again
    assert rescore.redis.get(tasks._queued_key("v1")) is None


def test_the_shutdown_reaches_a_re_score_in_a_pool_child(monkeypatch):
    """Celery tells its main process (``worker_shutting_down``); the task runs in a pool child,
    which is sent SIGTERM; there, during a re-score, SIGTERM stops the loop instead of the child."""
    sent = []
    monkeypatch.setattr(tasks.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    rescoring = types.SimpleNamespace(name=tasks.RESCORE_TASK, worker_pid=4242)
    other = types.SimpleNamespace(name="kafka_workers.tasks.refresh_popular", worker_pid=4343)
    monkeypatch.setattr(tasks.worker_state, "active_requests", [rescoring, other])
    try:
        tasks._worker_shutting_down(sig="SIGTERM", how="Warm", exitcode=0)
        assert sent == [(4242, signal.SIGTERM)]
    finally:
        tasks._STOP.clear()

    monkeypatch.setattr(tasks, "_IN_POOL_CHILD", True)
    before = signal.getsignal(signal.SIGTERM)
    with tasks._sigterm_stops_the_rescore():
        assert signal.getsignal(signal.SIGTERM) is not before  # else the next line would end pytest
        signal.raise_signal(signal.SIGTERM)
        assert tasks._STOP.is_set()
    assert signal.getsignal(signal.SIGTERM) is before
    tasks._STOP.clear()


def test_a_copy_that_finds_another_run_lets_go_of_the_queued_mark(rescore):
    """A copy that starts while another run holds the running mark ends at once; it kept the
    queued mark, so when that run died (its lease ran out) check_model queued nothing for hours."""
    r = rescore.redis
    r.set(tasks._running_key("v1"), "another run's token", ex=tasks.RUNNING_LEASE_S)
    r.set(tasks._queued_key("v1"), "1", ex=tasks.CONFIG.rescore_time_limit_s + 60)
    assert tasks.rescore_active_users("v1") == 0 and rescore.scored == []
    assert r.get(tasks._running_key("v1")) == b"another run's token"
    r.after(tasks.RUNNING_LEASE_S)  # that run was killed
    assert tasks.check_model() == "v1", "not queued again while the copy's queued mark lasted"


@pytest.mark.parametrize("other_run", ["finished", "failed"])
def test_a_version_made_current_again_starts_over_after_another_version_was_re_scored(
        rescore, monkeypatch, other_run):
    """v1's run failed after u3 and left its checkpoint; v2 was published and re-scored (to the end,
    or failing after u2); staff went back to v1. Its run went on after u3 and left u1..u3 with v2's lists."""
    monkeypatch.setattr(tasks, "CHECKPOINT_S", 0.0)
    current = types.SimpleNamespace(version="v1", fail_at="u4")
    monkeypatch.setattr(tasks.artifacts, "current_version", lambda: current.version)

    def rescore_user(model, user):
        if user == current.fail_at:
            raise RuntimeError("MongoDB refused the list")
        rescore.scored.append((model.version, user))
        return 1

    monkeypatch.setattr(tasks, "_rescore_user", rescore_user)
    with pytest.raises(RuntimeError):
        tasks.rescore_active_users("v1")
    current.version, current.fail_at = "v2", ("u3" if other_run == "failed" else None)
    with pytest.raises(RuntimeError) if other_run == "failed" else contextlib.nullcontext():
        tasks.rescore_active_users("v2")
    current.version, current.fail_at = "v1", None
    rescore.scored.clear()
    assert tasks.check_model() == "v1"
    tasks.rescore_active_users("v1")
    assert rescore.scored == [("v1", user) for user in USERS], "users kept v2's lists"


def test_a_checkpoint_and_a_run_taking_the_mark_over_never_both_go_on(rescore):
    """The checkpoint read the mark (its own), then set it: a run that took the mark in between (it
    had just expired) was overwritten, and both runs went on. Here that run takes it before each of
    the checkpoint's Redis calls on the mark in turn."""
    r, key = rescore.redis, tasks._running_key("v1")

    class Interleaved:
        """``r``, where the other run takes the mark just before the checkpoint's call ``at`` on it."""

        def __init__(self, at: int) -> None:
            self.at, self.calls, self.other_took = at, 0, None

        def __getattr__(self, name):
            def call(*args, **kwargs):
                if key in args[:3]:
                    if self.calls == self.at:
                        r.delete(key)  # this run's lease ran out
                        self.other_took = r.set(key, "B", nx=True, ex=tasks.RUNNING_LEASE_S)
                    self.calls += 1
                return getattr(r, name)(*args, **kwargs)
            return call

    counted = Interleaved(at=-1)
    r.set(key, "A")
    tasks._checkpoint(counted, "v1", "A", None, "u3", 3)
    for at in range(counted.calls):
        r.set(key, "A")
        interleaved = Interleaved(at)
        try:
            tasks._checkpoint(interleaved, "v1", "A", None, "u3", 3)
        except tasks._Superseded:
            continue
        assert not interleaved.other_took, f"both runs went on (the other took the mark before call {at})"


@pytest.mark.parametrize("end", ["stop", "failure", "finish"])
def test_a_run_taken_over_leaves_the_other_run_s_mark(rescore, monkeypatch, end):
    """It stalled past its lease on its last user, and another run took the mark over; then its
    worker stopped (it handed over: deleted that run's mark and queued a copy), or it failed, or
    it finished: it deleted the other run's mark, and check_model queued a third run."""
    r, key = rescore.redis, tasks._running_key("v1")

    def stalled(model, user):
        rescore.scored.append(user)
        if user == "u5":
            r.after(tasks.RUNNING_LEASE_S)
            r.set(key, "B")
            if end == "stop":
                tasks._worker_shutting_down(sig="SIGTERM", how="Warm", exitcode=0)
            if end == "failure":
                raise RuntimeError("MongoDB refused the list")
        return 1

    monkeypatch.setattr(tasks, "_rescore_user", stalled)
    monkeypatch.setattr(tasks, "_active_users", lambda days: list(USERS) + ["u6"] * (end == "stop"))
    with pytest.raises(RuntimeError) if end == "failure" else contextlib.nullcontext():
        tasks.rescore_active_users("v1")
    assert r.get(key) == b"B" and rescore.queued == []
    assert tasks.check_model() is None


def test_the_running_mark_is_renewed_while_the_model_loads(rescore, monkeypatch):
    """Renewed only at the checkpoints, a mark expired during a load longer than RUNNING_LEASE_S;
    check_model queued another run, which took it, and the first stopped at its first checkpoint
    (each run after it too: none got anywhere)."""
    r = rescore.redis
    monkeypatch.setattr(tasks, "RUNNING_LEASE_S", 0.4)  # renewed every 0.1 s

    def slow_load(version):
        for _ in range(2):  # a load of 1.5 leases, during which the renewal comes round
            r.renewed.clear()
            r.renewed.wait(30)
            r.after(tasks.RUNNING_LEASE_S * 0.75)
        if tasks.check_model():  # the mark expired: another run took it
            r.set(tasks._running_key("v1"), "another run's token")
        return types.SimpleNamespace(version=version)

    monkeypatch.setattr(tasks.artifacts, "load_model", slow_load)
    assert tasks.rescore_active_users("v1") == 5
    assert rescore.queued == [] and rescore.scored == USERS


def test_check_model_reads_both_marks_in_one_round_trip(rescore):
    """Beat calls it every few seconds: the version re-scored last and the running mark were two GETs."""
    r = rescore.redis
    r.set(tasks._running_key("v1"), "a run's token", ex=tasks.RUNNING_LEASE_S)
    assert tasks.check_model() is None and r.calls == ["mget"]
    r.calls.clear()
    r.delete(tasks._running_key("v1"))
    r.set(LAST_RESCORED_MODEL, "v1")
    assert tasks.check_model() is None and r.calls == ["mget"]


def test_a_run_that_finished_just_before_this_one_took_the_mark_is_not_done_again(rescore, monkeypatch):
    """The copy read LAST_RESCORED_MODEL, then another run of the version finished (set it, dropped its
    mark and checkpoint) before the copy took the running mark: the copy re-scored every user again."""
    r = rescore.redis
    set_mark = r.set

    def finishing_first(key, value, nx=False, ex=None):
        if key == tasks._running_key("v1") and nx:  # the other run's end, just before
            set_mark(LAST_RESCORED_MODEL, "v1")
        return set_mark(key, value, nx=nx, ex=ex)

    monkeypatch.setattr(r, "set", finishing_first)
    assert tasks.rescore_active_users("v1") == 0
    assert rescore.scored == []
    assert r.get(tasks._running_key("v1")) is None and r.get(tasks._queued_key("v1")) is None
