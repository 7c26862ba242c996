"""The eval runner and `llm-rec eval`: a bundle fitted on the training split, every scorer ranked through
the same Recommender, resume from the cache, validation-only calibration without leakage, and listwise
failure shares. Fake backend, tiny generated data."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from typer.testing import CliRunner

from llm_recommender.backends.fake import FakeBackend
from llm_recommender.cli import app
from llm_recommender.errors import UnknownNameError
from llm_recommender.evaluation import calibration_eval
from llm_recommender.evaluation.cache import ResultCache
from llm_recommender.evaluation.listwise_stats import listwise_failure_shares
from llm_recommender.evaluation.runner import EvalConfig, EvalRunner, RunStopped
from llm_recommender.protocol import RankRequest
from llm_recommender.recommender import Recommender
from tests.synthetic import hash_encoder, write_generic_dataset

FIT = "popularity,cooccurrence,embedding"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "dscache"))


@pytest.fixture
def data_dir(tmp_path):
    return write_generic_dataset(tmp_path / "data")


def score_fn(prompt: str, token: str) -> float:
    """Deterministic, prompt-dependent preferences, so scores are not all tied."""
    return (zlib.crc32((prompt[-300:] + "|" + token).encode()) % 1000) / 250.0


def config(data_dir, out, **kw):
    base = dict(
        dataset="generic",
        data_dir=data_dir,
        users=10,
        seed=0,
        out=out,
        progress=False,
        backend="fake",
        scorers="random,fused,popularity,embedding,cooccurrence,verbalizer,pointwise,listwise",
        fit_components=FIT,
    )
    return EvalConfig(**(base | kw))


def test_cli_writes_results_report_and_plots(data_dir, tmp_path):
    out = tmp_path / "out"
    args = [
        "eval",
        "--dataset",
        "generic",
        "--data-dir",
        str(data_dir),
        "--users",
        "10",
        "--backend",
        "fake",
        "--scorers",
        "random,fused,popularity,cooccurrence,verbalizer,pointwise,listwise",
        "--fit-components",
        "popularity,cooccurrence",
        "--position-bias",
        "--position-users",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    run = res["run"]
    assert run["backend"] == "fake" and run["model"] == "fake-model" and run["seed"] == 0
    assert run["command"].startswith("llm-rec") and run["started"] and "git_commit" in run
    scorers = res["sets"]["llmrank"]["scorers"]
    assert set(scorers) == {"random", "fused", "popularity", "cooccurrence", "verbalizer", "pointwise", "listwise"}
    for name, entry in scorers.items():
        assert entry["users"] == 10
        assert set(entry["ranking"]) == {"ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hr@1", "hr@5", "hr@10", "mrr"}
        assert entry["seconds_per_user"] is not None
        for cal in ("uncalibrated", "platt", "temperature", "isotonic"):
            assert {"auc", "log_loss", "brier", "ece"} <= set(entry["calibration"][cal]), (name, cal)
    assert scorers["listwise"]["listwise_failures"]["requests"] == 20  # valid + test
    assert "likes" in res["sets"] and "verbalizer" not in res["sets"]["likes"]["scorers"]
    sweep = res["position_bias"]["verbalizer"]
    assert len(sweep["K=1"]["ndcg@10"]) == 20 and sweep["K=3"]["permutations"] == 3
    assert run["engines"] == {}  # every strategy here ran on the pipeline's LLM
    report = (out / "report.md").read_text()
    assert "| fused |" in report and "ECE before" in report and "Listwise outputs" in report
    assert "scored with its own model" not in report
    # a strategy with its own LLM (a trained ranker) is named in the report's header
    from llm_recommender.evaluation.report import write_report

    res["run"]["engines"] = {"llm_ranker": {"model": "gemma fine-tuned (llm_ranker)", "backend": "transformers"}}
    write_report(res, out, [])
    header = (out / "report.md").read_text().split("## ")[0]
    assert "- llm_ranker scored with its own model: gemma fine-tuned (llm_ranker); backend: transformers" in header
    assert "in fusion" in report and (out / "bundle" / "bundle.json").is_file()
    for png in ("metrics.png", "reliability_llmrank.png", "reliability_likes.png", "position_bias.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("option", "value", "kind"),
    [
        ("--scorers", "random,nope", "scorer"),
        ("--dataset", "ml-10m", "dataset"),
        ("--calibrators", "platt,beta", "calibrator"),
    ],
)
def test_bad_names_are_typed_errors_listing_valid_names(tmp_path, option, value, kind):
    result = CliRunner().invoke(app, ["eval", option, value, "--out", str(tmp_path / "o"), "--no-progress"])
    assert isinstance(result.exception, UnknownNameError)
    assert f"valid {kind} names:" in str(result.exception)
    assert not (tmp_path / "o" / "results.json").exists()


def test_interrupted_run_resumes_and_rerun_is_instant(data_dir, tmp_path):
    out = tmp_path / "out"
    cfg = dict(scorers="popularity,verbalizer", calibration_protocol="llmrank", batch_size=3,
               fit_components="popularity")
    first = FakeBackend(score_fn=score_fn)
    with pytest.raises(RunStopped):
        EvalRunner(config(data_dir, out, stop_after=7, **cfg), backend=first).run()
    scored_first = sum(len(p) for kind, p in first.calls if kind == "next_token_logprobs")
    assert scored_first == 7
    assert len(ResultCache(out / "cache" / "verbalizer.jsonl")) == 7
    assert not (out / "results.json").exists()

    second = FakeBackend(score_fn=score_fn)
    res2 = EvalRunner(config(data_dir, out, **cfg), backend=second).run()
    prompts = [p for kind, batch in second.calls if kind == "next_token_logprobs" for p in batch]
    assert len(prompts) == 2 * 10 - 7  # only the cases the interrupted run did not finish
    assert res2["run"]["new_llm_requests"] == 13

    third = FakeBackend(score_fn=score_fn)
    res3 = EvalRunner(config(data_dir, out, **cfg), backend=third).run()
    assert third.calls == [] and res3["run"]["new_llm_requests"] == 0
    assert res3["sets"]["llmrank"]["scorers"]["verbalizer"] == res2["sets"]["llmrank"]["scorers"]["verbalizer"]

    # a different scorer configuration is a cache miss, not a stale hit
    fourth = FakeBackend(score_fn=score_fn)
    EvalRunner(config(data_dir, out, llm_history=3, **cfg), backend=fourth).run()
    assert sum(len(p) for kind, p in fourth.calls if kind == "next_token_logprobs") == 20


def test_calibration_sees_only_validation_targets_and_nothing_leaks(data_dir, tmp_path, monkeypatch):
    fits: list[tuple[str, list]] = []
    real_fit = calibration_eval.fit_calibrator

    def spy(name, results, labels, **options):
        fits.append((name, [list(x) for x in labels]))
        return real_fit(name, results, labels, **options)

    monkeypatch.setattr(calibration_eval, "fit_calibrator", spy)
    r = EvalRunner(config(data_dir, tmp_path / "out", scorers="fused,popularity,embedding,cooccurrence,verbalizer"),
                   backend=FakeBackend(score_fn=score_fn), text_encoder=hash_encoder)
    r.run()

    # 1. every calibrator was fitted on validation labels only
    val_labels = {s: [list(c.labels) for c in r.cases[s]["valid"]] for s in r.cases}
    assert fits and all(labels in val_labels.values() for _, labels in fits)
    val_res = [r.scored["llmrank"]["verbalizer"]["valid"][c.user_id][0] for c in r.cases["llmrank"]["valid"]]
    by_hand = real_fit("platt", val_res, val_labels["llmrank"])
    assert by_hand.params() == r.fitted_calibrators["llmrank/verbalizer/platt"].params()
    # a saved LLM calibrator records what it was fitted for, so Recommender refuses it for anything else
    saved = json.loads((tmp_path / "out" / "calibrators" / "llmrank__verbalizer__platt.json").read_text())
    assert saved["fitted_for"] == r.recommender.calibration_key("verbalizer")
    with pytest.raises(AssertionError, match="validation targets only"):
        calibration_eval.fit_on_validation("platt", val_res, r.cases["llmrank"]["test"])

    # 2. no target or later interaction reaches a case's history
    for split in ("valid", "test"):
        for case in r.cases["llmrank"][split]:
            seq = r.splits[case.user_id].sequence
            allowed = [(x.item_id, x.timestamp) for x in seq[: case.target_position]]
            assert [(h.id, h.timestamp) for h in case.request.history] == allowed[-50:]
    # 3. the bundle's popularity counts exclude every user's validation and test target
    rec = r.recommender
    counts = rec.bundle.components["popularity"].counts
    space = rec.bundle.space
    expected = np.zeros(len(space))
    for user in r.splits.values():
        for item in {x.item_id for x in user.before("valid")}:
            expected[space.index[item]] += 1
    np.testing.assert_array_equal(counts, expected)


def test_eval_ranks_exactly_what_the_recommender_serves(data_dir, tmp_path):
    r = EvalRunner(config(data_dir, tmp_path / "out", scorers="fused,cooccurrence", calibration_protocol="llmrank"),
                   backend=FakeBackend(score_fn=score_fn), text_encoder=hash_encoder)
    r.run()
    served = Recommender.load(tmp_path / "out" / "bundle", text_encoder=hash_encoder)
    for case in r.cases["llmrank"]["test"]:
        response = served.rank_request(case.request.model_copy(update={"top_k": len(case.request.candidates)}))
        got = r.scored["llmrank"]["fused"]["test"][case.user_id][0]
        by_id = {i.id: i.score for i in response.items}
        assert [by_id[c] for c in case.candidate_ids] == pytest.approx(list(got.scores), abs=1e-12)


def test_listwise_failure_shares_from_scripted_outputs():
    ids = ["a", "b", "c", "d"]
    ok = json.dumps({"ranking": ids})
    scripted = [
        # round 1: one output per request
        ok,
        "not json at all",
        json.dumps({"ranking": ["a", "b", "c", "zz"]}),
        json.dumps({"ranking": ["a", "a", "b", "c"]}),
        # round 2: requests 2, 3, 4 re-asked
        ok,
        json.dumps({"ranking": ["zz", "b", "c", "d"]}),
        ok,
        # round 3: request 3 again; then it falls back to the verbalizer
        json.dumps({"ranking": ["a", "b", "c"]}),
    ]
    backend = FakeBackend(score_fn=score_fn, generations=scripted)
    rec = Recommender(backend=backend, listwise_retries=2, listwise_keys="ids")
    request = RankRequest(
        history=[{"id": "h", "title": "Seen"}], candidates=[{"id": i, "title": f"Film {i}"} for i in ids]
    )
    results = rec.scorer("listwise").score_many([request] * 4)
    shares = listwise_failure_shares(results)
    assert shares["requests"] == 4 and shares["attempts"] == 8 and shares["mean_attempts"] == 2.0
    assert shares["not_json"] == 0.25 and shares["failed_to_parse"] == 0.25
    assert shares["unknown_id"] == 0.25 and shares["duplicate_id"] == 0.25 and shares["missing_id"] == 0.25
    assert shares["first_attempt_failed"] == 0.75 and shares["fallback"] == 0.25
    assert shares["attempt_shares"]["unknown_id"] == 2 / 8


def test_texts_follow_n_candidates(data_dir, tmp_path):
    from llm_recommender.evaluation.plots import ranking_title

    out = tmp_path / "out10"
    result = CliRunner().invoke(app, ["eval", "--dataset", "generic", "--data-dir", str(data_dir), "--users", "10",
                                      "--backend", "fake", "--scorers", "random,popularity", "--n-candidates", "10",
                                      "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["n_candidates"] == 10
    text = json.dumps(res["definitions"]) + (out / "report.md").read_text() + ranking_title(res)
    assert "9 random negatives" in text and "10 candidates" in text and "the 9 negatives" in text
    assert "20 candidates" not in text and "19 negatives" not in text and "19 random" not in text
    assert "--n-candidates" in CliRunner().invoke(app, ["eval", "--help"]).output
