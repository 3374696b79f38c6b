"""train's compact driver-side layout: the matrices and held-out sets cut from it are the ones the
old (uid, iid, part) arrays gave, and the tuning sample is a sample of whole users."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from spark_jobs import engines
from spark_jobs.interactions import Interactions, csr, heldout, ids_at


def arrays(n_users: int = 300, n_items: int = 80, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pairs = np.unique(rng.integers(0, n_users, 4000) * n_items + rng.integers(0, n_items, 4000))
    uid, iid = (pairs // n_items).astype(np.int32), (pairs % n_items).astype(np.int32)
    shuffle = rng.permutation(uid.size)  # Spark hands the pairs over in any order
    uid, iid = uid[shuffle], iid[shuffle]
    part = np.zeros(uid.size, np.int8)
    for u in np.unique(uid):
        mine = np.flatnonzero(uid == u)
        if mine.size >= 3:
            part[mine[-1]], part[mine[-2]] = 2, 1
    return {"uid": uid, "iid": iid, "part": part, "rating": np.ones(uid.size, np.float32)}


def test_matrices_and_heldout_match_the_arrays():
    arr = arrays()
    shape = (300, 80)
    data = Interactions.from_arrays(arr["uid"], arr["iid"], arr["part"], pa.array([f"u{u}" for u in range(300)]),
                                    [f"i{i}" for i in range(80)])
    assert data.shape == shape and data.n == arr["uid"].size
    assert data.items.dtype == np.int32 and data.part.dtype == np.int8
    for max_part in (0, 1, 2):
        got, want = data.matrix(max_part), csr(arr, arr["part"] <= max_part, shape)
        assert got.dtype == np.float32 and got.indices.dtype == np.int32
        assert (got != want).nnz == 0 and got.nnz == want.nnz
    assert np.shares_memory(data.matrix(2).indices, data.items)  # everything shares the pairs: no copy
    for part in (1, 2):
        assert data.heldout(part, 10_000) == heldout(arr, part, 10_000)
        assert data.heldout(part, 25) == heldout(arr, part, 25)  # the same fixed sample of users
    assert data.counts()["test"] == int((arr["part"] == 2).sum())


def test_subset_keeps_whole_users_renumbered():
    arr = arrays()
    data = Interactions.from_arrays(arr["uid"], arr["iid"], arr["part"], [f"u{u}" for u in range(300)],
                                    [f"i{i}" for i in range(80)])
    users = np.array([3, 17, 18, 250])
    sub = data.subset(users)
    assert sub.shape == (4, 80) and sub.user_ids == ["u3", "u17", "u18", "u250"]
    full = data.matrix(1)
    assert (sub.matrix(1) != full[users]).nnz == 0
    assert ids_at(pa.array(["a", "b", "c"]), np.array([2, 0])) == ["c", "a"]


def test_tuning_sample_is_bounded_and_everyone_below_the_budget():
    arr = arrays()
    data = Interactions.from_arrays(arr["uid"], arr["iid"], arr["part"], [f"u{u}" for u in range(300)],
                                    [f"i{i}" for i in range(80)])
    assert engines.tuning_sample(data, budget=10 ** 9) is data
    n_train = int((data.part == 0).sum())
    sample = engines.tuning_sample(data, budget=n_train // 4)
    assert sample.shape[0] == int(300 * (n_train // 4) / n_train) and sample.shape[1] == 80
    assert 0.1 * n_train < int((sample.part == 0).sum()) < 0.45 * n_train


def test_gate_numbers_come_from_every_user_not_the_tuning_sample(monkeypatch):
    """At scale the grid runs on a sample of users, but the publish gate's three validation numbers
    (ours, popularity, the published version) must come from every user's validation split, ours
    from the chosen configuration fitted on every user's training pairs."""
    arr = arrays()
    data = Interactions.from_arrays(arr["uid"], arr["iid"], arr["part"], [f"u{u}" for u in range(300)],
                                    [f"i{i}" for i in range(80)])
    monkeypatch.setattr(engines, "tuning_sample", lambda d: d.subset(np.arange(0, 300, 4)))
    monkeypatch.setattr(engines, "EASE_GRID", [10.0, 100.0])
    seen = []
    ranked = engines.select_and_test("ease", data, current=lambda x, val: seen.append((x.shape, len(val))) or {})

    n_eval = engines.eval_users(80)
    x_train, val = data.matrix(0), data.heldout(1, n_eval)
    assert seen == [((300, 80), len(val))]
    assert ranked["tuning"]["users"] == 75
    want = engines.fit_and_measure("ease", ranked["best"], x_train, val, 0)
    assert ranked["validation"] == want
    pop = engines.rank_metrics(engines.popularity_scorer(x_train), x_train, val, engines.K)
    assert ranked["popularity_validation"] == pop
