"""Trained CF baselines from ``implicit`` (als, bpr, itemknn): fold-in scoring from the request's
history, item-side save/load without user data, seeded fits, and no leakage of targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("implicit", reason="the cf extra (implicit) is not installed")

from llm_recommender.data import load_dataset
from llm_recommender.data.splits import (
    cold_start_cases,
    cold_start_items,
    cold_start_training,
    leave_one_out,
    llmrank_cases,
    training_interactions,
)
from llm_recommender.errors import InvalidRequestError
from llm_recommender.protocol import RankRequest
from llm_recommender.scorers.baselines.implicit_cf import UNKNOWN_SCORE, ALSModel, BPRModel, ItemKNNModel, fold_in

MODELS = {cls.name: cls for cls in (ALSModel, BPRModel, ItemKNNModel)}

SMALL = {
    "als": {"factors": 8, "iterations": 10, "regularization": 0.1},
    "bpr": {"factors": 8, "iterations": 60, "learning_rate": 0.05},
    "itemknn": {"K": 10},
}


def two_tastes(n_users: int = 40, seed: int = 0) -> tuple[list[str], list[str]]:
    """Half the users consume items a0..a9, the other half b0..b9 (7 of the 10 each)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        group = "a" if u % 2 == 0 else "b"
        for k in rng.choice(10, size=7, replace=False):
            users.append(f"secret-user-{u}")
            items.append(f"{group}{k}")
    return users, items


def request(history: list[str], candidates: list[str]) -> RankRequest:
    return RankRequest(
        history=[{"id": h, "title": f"item {h}"} for h in history],
        candidates=[{"id": c, "title": f"item {c}"} for c in candidates],
    )


@pytest.fixture(params=["als", "bpr", "itemknn"])
def fitted(request):
    users, items = two_tastes()
    return MODELS[request.param](**SMALL[request.param]).fit(users, items)


def test_history_alone_ranks_the_users_taste_first(fitted):
    cands = ["b0", "b1", "a8", "b2", "a9", "b3"]
    for history, liked in ((["a0", "a1", "a2", "a3"], {"a8", "a9"}), (["b4", "b5", "b6", "b7"], {"b0", "b1"})):
        result = fitted.score(request(history, cands))
        top2 = {cands[i] for i in result.ranking()[:2]}
        if liked == {"a8", "a9"}:
            assert top2 == liked, (fitted.name, result.scores)
        else:
            assert top2 <= {"b0", "b1", "b2", "b3"}, (fitted.name, result.scores)
        assert result.history_used == 4 and not result.notes
        assert np.all((result.probabilities >= 0) & (result.probabilities <= 1))
        # the probability is a monotone map of the score
        order = np.argsort(result.scores, kind="stable")
        assert np.all(np.diff(result.probabilities[order]) >= 0)


def test_unknown_items_score_a_low_constant_with_a_note(fitted):
    result = fitted.score(request(["a0", "a1"], ["a5", "new-1", "b2", "new-2"]))
    assert result.scores[1] == result.scores[3] == UNKNOWN_SCORE
    assert result.probabilities[1] == result.probabilities[3] == 0.0
    assert result.scores[[0, 2]].min() > UNKNOWN_SCORE
    assert any("2 candidate(s) not in the training" in n for n in result.notes)
    empty = fitted.score(request(["never-seen"], ["a5", "b2"]))
    assert empty.history_used == 0 and any("no history item" in n for n in empty.notes)


def test_als_fold_in_is_implicits_own_user_step():
    from scipy import sparse

    users, items = two_tastes()
    for alpha in (1.0, 4.0):
        model = ALSModel(alpha=alpha, **SMALL["als"]).fit(users, items)
        ids = model.item_ids
        hist = sorted(ids.index(i) for i in ("a0", "a2", "a5"))
        row = sparse.csr_matrix((np.ones(3, dtype=np.float32), ([0, 0, 0], hist)), shape=(1, len(ids)))
        from implicit.als import AlternatingLeastSquares

        ref = AlternatingLeastSquares(factors=8, regularization=0.1, alpha=alpha)
        ref.item_factors = model.item_factors.astype(np.float32)
        expected = ref.recalculate_user(0, row)
        got = fold_in(model.item_factors, hist, 0.1, alpha)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.filterwarnings("ignore:Method expects CSR input")  # implicit's own BM25 class, the reference
def test_itemknn_scores_equal_implicits_recommend():
    from implicit.nearest_neighbours import BM25Recommender
    from scipy import sparse

    users, items = two_tastes()
    model = ItemKNNModel(K=10, weighting="bm25").fit(users, items)
    ids = model.item_ids
    hist, cands = ["a0", "a3", "b1"], ["a5", "a6", "b4", "b8"]
    # the same fit through implicit's own class and recommend()
    u_ids, u_idx = np.unique(users, return_inverse=True)
    i_idx = np.array([ids.index(i) for i in items])
    X = sparse.csr_matrix((np.ones(len(users), dtype=np.float32), (u_idx, i_idx)), shape=(len(u_ids), len(ids)))
    X.data[:] = 1.0
    ref = BM25Recommender(K=10, K1=1.2, B=0.75, num_threads=1)
    ref.fit(X, show_progress=False)
    cols = [ids.index(c) for c in cands]
    row = sparse.csr_matrix(
        (np.ones(3, dtype=np.float32), ([0, 0, 0], [ids.index(h) for h in hist])), shape=(1, len(ids))
    )
    got_ids, got_scores = ref.recommend(0, row, N=len(cands), items=cols, filter_already_liked_items=False)
    expected = dict(zip(got_ids.tolist(), got_scores.tolist()))
    np.testing.assert_allclose(model.score(request(hist, cands)).scores, [expected[c] for c in cols], rtol=1e-5)


def test_fits_are_seeded(fitted):
    users, items = two_tastes()
    again = MODELS[fitted.name](**SMALL[fitted.name]).fit(users, items)
    req = request(["a0", "b1", "a4"], ["a5", "b2", "a9", "b7"])
    np.testing.assert_array_equal(fitted.score(req).scores, again.score(req).scores)


def test_save_load_round_trip_holds_no_user_data(fitted, tmp_path):
    folder = fitted.save(tmp_path / fitted.name)
    loaded = type(fitted).load(folder)
    req = request(["a0", "a1", "b3"], ["a5", "b2", "a9", "unknown"])
    np.testing.assert_array_equal(fitted.score(req).scores, loaded.score(req).scores)
    assert loaded.config == fitted.config and loaded.trained_user_vector("secret-user-0") is None
    blob = b"".join(p.read_bytes() for p in folder.iterdir())
    assert b"secret-user" not in blob
    assert not any("user" in p.name for p in folder.iterdir())
    # item-side arrays only: one row per item, none per user (40 users, 20 items)
    for p in folder.glob("*.npy"):
        assert np.load(p).shape[0] == 20
    if fitted.name == "itemknn":
        from scipy import sparse

        assert sparse.load_npz(folder / "similarity.npz").shape == (20, 20)


def test_load_refuses_another_models_folder(tmp_path):
    users, items = two_tastes()
    folder = ALSModel(**SMALL["als"]).fit(users, items).save(tmp_path / "m")
    with pytest.raises(InvalidRequestError) as exc:
        BPRModel.load(folder)
    assert exc.value.param == "path"
    (folder / "item_factors.npy").write_bytes(b"truncated")
    with pytest.raises(InvalidRequestError):
        ALSModel.load(folder)
    with pytest.raises(InvalidRequestError):
        ALSModel.load(tmp_path / "missing")


def test_config_errors_name_the_parameter_and_unfitted_models_refuse_to_score():
    with pytest.raises(InvalidRequestError) as exc:
        ALSModel(factors=0)
    assert exc.value.param == "als.factors"
    with pytest.raises(InvalidRequestError) as exc:
        ItemKNNModel(weighting="jaccard")
    assert exc.value.param == "itemknn.weighting"
    with pytest.raises(InvalidRequestError) as exc:
        BPRModel(epochs=3)
    assert exc.value.param == "bpr.epochs"
    with pytest.raises(InvalidRequestError) as exc:
        ALSModel().score_many([request(["a"], ["b"])])
    assert exc.value.param == "scorer"
    with pytest.raises(InvalidRequestError) as exc:
        ALSModel().fit(["u1", "u2"], ["i1"])
    assert exc.value.param == "users"


@pytest.fixture(scope="module")
def latest_small():
    return load_dataset("ml-latest-small", cache=False)


@pytest.fixture
def unique_targets(tmp_path, monkeypatch):
    """Every user's last two interactions are items nobody else has (valid-u, then test-u)."""
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))
    users, items = two_tastes()
    rows = [{"user_id": u, "item_id": i, "timestamp": t} for t, (u, i) in enumerate(zip(users, items))]
    n = len(rows)
    for k, u in enumerate(sorted(set(users))):
        rows.append({"user_id": u, "item_id": f"valid-{u}", "timestamp": n + 2 * k})
        rows.append({"user_id": u, "item_id": f"test-{u}", "timestamp": n + 2 * k + 1})
    all_items = sorted({r["item_id"] for r in rows})
    root = tmp_path / "unique"
    root.mkdir()
    (root / "items.jsonl").write_text(
        "".join(json.dumps({"item_id": i, "title": f"Item {i}"}) + "\n" for i in all_items)
    )
    (root / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_dataset("generic", root, cache=False)


@pytest.mark.parametrize("name", ["als", "bpr", "itemknn"])
def test_fitting_on_training_interactions_never_sees_a_target(unique_targets, name):
    """A model fitted on the validation-time training split knows no validation or test target;
    fitted on the test-time split it knows the validation targets but still no test target."""
    splits = leave_one_out(unique_targets)
    for split, known_prefixes in (("valid", ()), ("test", ("valid-",))):
        train = training_interactions(splits, split)
        model = MODELS[name](**SMALL[name]).fit([u for u, _ in train], [x.item_id for _, x in train])
        seen = {i for i in model.item_ids if i.startswith(("valid-", "test-"))}
        assert {i.split("-", 1)[0] + "-" for i in seen} == set(known_prefixes)
        cases = llmrank_cases(unique_targets, split=split, n_users=10, n_candidates=5, seed=0, splits=splits)
        for case, result in zip(cases, model.score_many([c.request for c in cases])):
            assert result.scores[case.ground_truth_index] == UNKNOWN_SCORE


def test_cold_start_cases_are_blind_for_cf(latest_small):
    splits = leave_one_out(latest_small)
    cold = cold_start_items(latest_small, 0.1, 0)
    train = cold_start_training(splits, cold)
    model = ItemKNNModel(K=10).fit([u for u, _ in train], [x.item_id for _, x in train])
    assert not set(model.item_ids) & cold
    cases = cold_start_cases(latest_small, n_users=20, splits=splits, cold=cold)
    for result in model.score_many([c.request for c in cases]):
        assert np.all(result.scores == UNKNOWN_SCORE)


def test_fitting_als_prints_no_blas_thread_warning():
    """implicit warns (at construction) when OpenBLAS may use more than one thread; the fit limits
    BLAS to one thread around construction and fit, so a user sees no warning they cannot act on."""
    import warnings

    import implicit.utils
    from threadpoolctl import threadpool_limits

    implicit.utils._checked_blas_config = False  # implicit warns once per process
    users, items = two_tastes()
    with threadpool_limits(2, "blas"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MODELS["als"](**SMALL["als"]).fit(users, items)
    assert not [w for w in caught if "BLAS" in str(w.message)], [str(w.message) for w in caught]


def test_itemknn_neighbours_are_the_terms_of_its_score():
    """The evidence behind an item-kNN ranking: the history items' similarities to the candidate, which
    sum to its score; the strongest first, none that contributes nothing."""
    users, items = two_tastes()
    knn = MODELS["itemknn"](K=10, aggregate="sum").fit(users, items)
    history = ["a0", "a1", "a2", "b0"]
    res = knn.score_many([request(history, ["a5", "b5"])])[0]
    for j, cand in enumerate(["a5", "b5"]):
        terms = knn.neighbours(history, cand, k=10)
        assert [s for _, s in terms] == sorted((s for _, s in terms), reverse=True)
        assert all(s > 0 for _, s in terms) and {h for h, _ in terms} <= set(history)
        assert sum(s for _, s in terms) == pytest.approx(res.scores[j])
    assert knn.neighbours(history, "a5")[0][0].startswith("a")  # its own taste explains it
    assert knn.neighbours(history, "unknown-item") == []
