"""The sequence model on tiny synthetic data: a cyclic "item k is followed by k + 1" pattern."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm_recommender.errors import InvalidRequestError, ModelLoadError
from llm_recommender.scorers.learned.sequence_model import SequenceModel, SequenceModelConfig

N_ITEMS, TEXT_DIM = 20, 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cyclic(n_users: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[(s + k) % N_ITEMS for k in range(int(rng.integers(6, 12)))] for s in rng.integers(N_ITEMS, size=n_users)]


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32)


def small(**kw) -> SequenceModelConfig:
    base = {
        "dim": 16,
        "layers": 1,
        "heads": 2,
        "max_len": 8,
        "dropout": 0.0,
        "batch_size": 16,
        "lr": 1e-2,
        "epochs": 12,
        "patience": None,
        "lr_schedule": "constant",  # these tests change epochs between resumed calls; the schedule has its own tests
        "bf16": False,
    }
    return SequenceModelConfig(**(base | kw))


def next_item_accuracy(model: SequenceModel, seqs: list[list[int]]) -> float:
    hist = [np.array(s[:-1]) for s in seqs]
    scores = model.score(hist, [np.arange(N_ITEMS)] * len(seqs))
    return float(np.mean([int(np.argmax(sc)) == s[-1] for sc, s in zip(scores, seqs)]))


@pytest.fixture(scope="module")
def trained(vectors) -> SequenceModel:
    torch.set_num_threads(1)
    return SequenceModel.fit(cyclic(80, 0), N_ITEMS, vectors, small(id_dropout=0.5, epochs=25), progress=False)


def weights(model: SequenceModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.net.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_learns_the_sequential_pattern_far_above_chance(trained):
    acc = next_item_accuracy(trained, cyclic(40, 99))  # unseen users: h_u comes from the history alone
    assert acc >= 0.8, acc  # chance is 1/20


def test_sampled_softmax_and_id_only_learn_too(vectors):
    sampled = SequenceModel.fit(cyclic(80, 0), N_ITEMS, vectors, small(loss="sampled", n_negatives=5), progress=False)
    id_only = SequenceModel.fit(cyclic(80, 0), N_ITEMS, None, small(use_text=False), progress=False)
    assert next_item_accuracy(sampled, cyclic(40, 99)) >= 0.6
    assert next_item_accuracy(id_only, cyclic(40, 99)) >= 0.6


def test_save_load_round_trip_gives_identical_scores(trained, vectors, tmp_path):
    trained.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"sequence.safetensors", "sequence.json"}
    loaded = SequenceModel.load(tmp_path / "m")
    hist = [np.array([3, 4, -1]), np.array([], dtype=np.int64)]
    cand = [np.array([6, -1, 0]), np.array([1, 2])]
    hv = [np.tile(vectors[5], (3, 1)), None]
    cv = [np.tile(vectors[7], (3, 1)), None]
    a = trained.score(hist, cand, candidate_vectors=cv, history_vectors=hv)
    b = loaded.score(hist, cand, candidate_vectors=cv, history_vectors=hv)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert loaded.config == trained.config and loaded.n_items == N_ITEMS
    assert SequenceModelConfig.model_validate_json(trained.config.model_dump_json()) == trained.config


def test_load_of_a_broken_folder_is_a_typed_error(trained, tmp_path):
    with pytest.raises(ModelLoadError):
        SequenceModel.load(tmp_path / "missing")
    trained.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "sequence.json").read_text())
    meta["config"]["dim"] = 32  # weights no longer match
    (tmp_path / "m" / "sequence.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError):
        SequenceModel.load(tmp_path / "m")


def test_same_seed_same_weights_other_seed_other_weights(vectors):
    fit = lambda seed: SequenceModel.fit(
        cyclic(30, 0), N_ITEMS, vectors, small(epochs=2, dropout=0.2, id_dropout=0.3, seed=seed), progress=False
    )
    a, b, c = weights(fit(0)), weights(fit(0)), weights(fit(1))
    assert same_weights(a, b)
    assert not same_weights(a, c)


def test_resume_from_a_checkpoint_continues_to_the_same_weights(vectors, tmp_path):
    cfg = small(epochs=4, dropout=0.2, id_dropout=0.3)
    seqs = cyclic(30, 0)
    full = SequenceModel.fit(seqs, N_ITEMS, vectors, cfg, progress=False)
    first = SequenceModel.fit(seqs, N_ITEMS, vectors, cfg.model_copy(update={"epochs": 2}), checkpoint_dir=tmp_path)
    assert first.record["epochs_run"] == 2
    assert (tmp_path / "sequence-checkpoint.pt").is_file()
    resumed = SequenceModel.fit(seqs, N_ITEMS, vectors, cfg, checkpoint_dir=tmp_path, progress=False)
    assert resumed.record["epochs_run"] == 4
    assert [h["epoch"] for h in resumed.record["history"]] == [1, 2, 3, 4]
    assert same_weights(weights(full), weights(resumed))
    assert not same_weights(weights(first), weights(resumed))
    with pytest.raises(InvalidRequestError) as err:  # other settings: never silently mixed
        SequenceModel.fit(seqs, N_ITEMS, vectors, cfg.model_copy(update={"lr": 0.5}), checkpoint_dir=tmp_path)
    assert err.value.param == "checkpoint_dir"


def test_early_stopping_keeps_the_best_epoch(vectors):
    seqs = cyclic(30, 0)
    curve = iter([0.5, 0.9, 0.1, 0.2, 0.3, 0.4, 0.95])
    model = SequenceModel.fit(
        seqs, N_ITEMS, vectors, small(epochs=7, patience=3), valid_fn=lambda m: next(curve), progress=False
    )
    rec = model.record
    assert rec["epochs_run"] == 5 and rec["best_epoch"] == 2 and rec["best_valid"] == 0.9
    two = SequenceModel.fit(seqs, N_ITEMS, vectors, small(epochs=2), progress=False)
    assert same_weights(weights(model), weights(two))


def test_unseen_item_scores_from_its_text_like_the_known_item(trained, vectors):
    seqs = cyclic(20, 7)
    hist = [np.array(s[:-1]) for s in seqs]
    ranks = []
    for h, s in zip(hist, seqs):
        target = s[-1]
        others = np.array([i for i in range(N_ITEMS) if i != target])
        cand = np.concatenate([[-1], others])  # the target, presented as an item the model never saw
        cv = np.zeros((len(cand), TEXT_DIM), dtype=np.float32)
        cv[0] = vectors[target]
        sc = trained.score([h], [cand], candidate_vectors=[cv])[0]
        assert np.isfinite(sc).all()
        ranks.append(int((sc > sc[0]).sum()) + 1)
    # Measured: with ID dropout the text-only copy ranks first every time; without it, 13 of 20.
    assert np.mean([r == 1 for r in ranks]) >= 0.9, ranks  # chance: 1/20


def test_id_only_model_gives_unseen_items_a_finite_score_without_vectors():
    model = SequenceModel.fit(cyclic(20, 0), N_ITEMS, None, small(use_text=False, epochs=1), progress=False)
    (sc,) = model.score([np.array([1, -1, 2])], [np.array([-1, 3])])
    assert np.isfinite(sc).all() and sc.shape == (2,)


def test_scores_are_batched_and_independent_of_the_other_requests(trained):
    one = trained.score([np.array([1, 2, 3])], [np.array([4, 5])])[0]
    many = trained.score([np.array([7]), np.array([1, 2, 3])], [np.arange(N_ITEMS), np.array([4, 5])])
    np.testing.assert_allclose(many[1], one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"histories": [np.array([1, N_ITEMS])], "candidates": [np.array([1])]}, "histories[0]"),
        ({"histories": [np.array([1])], "candidates": [np.array([-2])]}, "candidates[0]"),
        ({"histories": [np.array([1])], "candidates": [np.array([-1, 2])]}, "candidate_vectors[0]"),
        (
            {"histories": [np.array([-1])], "candidates": [np.array([2])], "history_vectors": [None]},
            "history_vectors[0]",
        ),
        (
            {"histories": [np.array([1])], "candidates": [np.array([-1])], "candidate_vectors": [np.zeros((1, 3))]},
            "candidate_vectors[0]",
        ),
        ({"histories": [np.array([1]), np.array([2])], "candidates": [np.array([1])]}, "candidates"),
        ({"histories": [np.array([[1]])], "candidates": [np.array([1])]}, "histories[0]"),
    ],
)
def test_bad_score_input_names_the_param(trained, kwargs, param):
    with pytest.raises(InvalidRequestError) as err:
        trained.score(**kwargs)
    assert err.value.param == param


def test_bad_fit_input_names_the_param(vectors):
    with pytest.raises(InvalidRequestError) as err:
        SequenceModel.fit(cyclic(5, 0), N_ITEMS, vectors[:, :3].T, small(epochs=1), progress=False)
    assert err.value.param == "item_vectors"
    with pytest.raises(InvalidRequestError) as err:
        SequenceModel.fit([[0, 1], [2, N_ITEMS]], N_ITEMS, vectors, small(epochs=1), progress=False)
    assert err.value.param == "sequences[1]"
    with pytest.raises(InvalidRequestError) as err:
        SequenceModel.fit(cyclic(5, 0), N_ITEMS, None, small(epochs=1), progress=False)
    assert err.value.param == "item_vectors"


def test_cosine_schedule_warms_up_peaks_and_decays_to_zero_as_a_function_of_the_step():
    from llm_recommender.scorers.learned._training import set_lr

    cfg = small(lr_schedule="cosine", warmup=0.1, epochs=10, lr=1e-2)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)

    def lr_at(epoch: int, step: int) -> float:
        set_lr(opt, cfg, epoch, step, n_steps=10)  # 100 steps in all, 10 of warm-up
        return opt.param_groups[0]["lr"]

    assert lr_at(0, 0) == pytest.approx(1e-3)  # 1/10 of the way up
    assert lr_at(0, 9) == pytest.approx(1e-2 * 0.5 * (1 + np.cos(np.pi * 0.09)))  # warm-up done, barely decayed
    assert lr_at(5, 0) == pytest.approx(5e-3)  # half way: half the peak
    assert lr_at(9, 9) < 1e-5
    assert lr_at(3, 4) == lr_at(3, 4)  # a pure function of the position: a resumed fit follows the same curve
    before = lr_at(5, 0)
    set_lr(opt, small(lr=1e-2), 5, 0, 10)  # constant: the optimiser's rate is left as it is
    assert opt.param_groups[0]["lr"] == before


def test_cosine_fit_learns_and_refuses_a_checkpoint_of_another_length(vectors, tmp_path):
    seqs = cyclic(80, 0)
    cfg = small(lr_schedule="cosine", epochs=12)
    model = SequenceModel.fit(seqs, N_ITEMS, vectors, cfg, progress=False, checkpoint_dir=tmp_path)
    assert next_item_accuracy(model, seqs) > 0.5  # chance is 1/20
    with pytest.raises(InvalidRequestError) as err:  # the schedule's horizon is the epoch count: never mixed
        SequenceModel.fit(seqs, N_ITEMS, vectors, cfg.model_copy(update={"epochs": 20}), checkpoint_dir=tmp_path)
    assert err.value.param == "checkpoint_dir"


def test_planned_steps_shorten_the_epochs_of_a_large_dataset_only():
    from llm_recommender.scorers.learned.sequence_model import planned_epochs

    cfg = SequenceModelConfig(epochs=30, steps=1000, batch_size=128)
    assert planned_epochs(cfg, 2_200) == 30  # ML-100K-size: 18 batches an epoch, 1,000 steps would be 56 epochs
    assert planned_epochs(cfg, 22_548) == 6  # ML-1M-size: 177 batches an epoch
    assert planned_epochs(cfg, 225_000) == 2  # 10M: never fewer than 2
    assert planned_epochs(cfg.model_copy(update={"steps": None}), 225_000) == 30


def test_a_fit_records_the_epochs_it_planned_and_resolves_bf16(vectors):
    seqs = cyclic(80, 0)  # 80 windows: 5 batches of 16, so 10 planned steps are 2 epochs
    model = SequenceModel.fit(seqs, N_ITEMS, vectors, small(steps=10, epochs=12, bf16="auto"), progress=False)
    assert model.config.epochs == 2 and model.record["epochs_run"] == 2
    assert model.config.bf16 in (True, False)  # "auto" became what this CPU has


def test_loss_auto_is_the_full_softmax_on_small_catalogues_and_sampled_logq_on_large_ones(vectors):
    from llm_recommender.scorers.item_space import LARGE_CATALOGUE_ITEMS
    from llm_recommender.scorers.learned.sequence_model import resolve_loss

    cfg = SequenceModelConfig()
    assert cfg.loss == "auto"
    assert resolve_loss(cfg, 3_706) == "full_softmax"  # ML-1M
    assert resolve_loss(cfg, LARGE_CATALOGUE_ITEMS + 1) == "sampled_logq"  # the 10M set has 37,060 items
    assert resolve_loss(cfg.model_copy(update={"loss": "sampled"}), 37_060) == "sampled"  # a stated loss stays
    model = SequenceModel.fit(cyclic(80, 0), N_ITEMS, vectors, small(loss="auto"), progress=False)
    assert model.config.loss == "full_softmax"  # what the fit resolved is what sequence.json records


def test_lr_auto_is_higher_on_item_ids_alone_than_with_text_vectors(vectors):
    from llm_recommender.scorers.learned.sequence_model import LR_IDS_ONLY, LR_WITH_TEXT, resolve_lr

    cfg = SequenceModelConfig()
    assert cfg.lr == "auto" and LR_IDS_ONLY > LR_WITH_TEXT
    assert resolve_lr(cfg) == LR_WITH_TEXT  # the default reads text vectors
    assert resolve_lr(cfg.model_copy(update={"use_text": False})) == LR_IDS_ONLY
    assert resolve_lr(cfg.model_copy(update={"lr": 1e-3, "use_text": False})) == 1e-3  # a stated rate stays
    # what the fit resolved is what sequence.json records
    ids = SequenceModel.fit(cyclic(80, 0), N_ITEMS, vectors, small(lr="auto", use_text=False), progress=False)
    assert ids.config.lr == LR_IDS_ONLY
    text = SequenceModel.fit(cyclic(80, 0), N_ITEMS, vectors, small(lr="auto", use_text=True), progress=False)
    assert text.config.lr == LR_WITH_TEXT


def _grad_of_states(loss_name: str, log_q, n_negatives: int = 0) -> torch.Tensor:
    """The gradient of one batch's loss with respect to the encoder's states, for one loss."""
    from types import SimpleNamespace

    from llm_recommender.scorers.learned._net import SequenceNet
    from llm_recommender.scorers.learned._training import _loss

    n_items = 40
    cfg = small(use_text=False, loss=loss_name, n_negatives=max(n_negatives, 1))
    torch.manual_seed(0)
    net = SequenceNet(n_items, 0, cfg)
    captured: dict[str, torch.Tensor] = {}
    encoder = net.encoder

    def spy(h, valid):
        out = encoder(h, valid)
        out.retain_grad()
        captured["states"] = out
        return out

    rng = np.random.default_rng(3)
    inp = torch.from_numpy(rng.integers(1, n_items + 1, size=(16, 8)))
    tgt = torch.from_numpy(rng.integers(1, n_items + 1, size=(16, 8)))
    torch.manual_seed(1)
    _loss(SimpleNamespace(item_vectors=net.item_vectors, items=net.items, encoder=spy), cfg, inp, tgt, None,
          log_q).backward()
    return captured["states"].grad.flatten()


def test_the_log_q_correction_makes_the_sampled_softmax_follow_the_full_one():
    """Negatives drawn by a skewed frequency, with enough draws: corrected, the gradient points where the full
    softmax's does (without the correction, measured: cosine 0.86, pulled towards the frequent items)."""
    from llm_recommender.scorers.learned._training import sampling_log_q

    n_rows = 41
    zipf = np.repeat(np.arange(1, n_rows), (400 / np.arange(1, n_rows) ** 2.0).astype(int) + 1)
    log_q = sampling_log_q(zipf, n_rows)
    assert torch.isinf(log_q[0]) and torch.isclose(log_q[1:].exp().sum(), torch.tensor(1.0))
    full = _grad_of_states("full_softmax", None)
    corrected = _grad_of_states("sampled_logq", log_q, n_negatives=20_000)
    assert torch.nn.functional.cosine_similarity(corrected, full, 0) > 0.98
