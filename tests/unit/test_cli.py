"""The CLI door: help, rank from a file or stdin, and bad input as one clear line (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "llm_recommender.cli"]


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, timeout=120)


def test_help_lists_commands():
    out = run("--help").stdout.decode()
    for cmd in ("rank", "demo", "serve"):
        assert cmd in out


def test_rank_from_file_and_stdin(tmp_path, sample_request):
    path = tmp_path / "req.json"
    path.write_text(json.dumps(sample_request))
    a = run("rank", str(path), "--backend", "fake")
    assert a.returncode == 0, a.stderr.decode()
    resp = json.loads(a.stdout)
    assert resp["backend"] == "fake" and len(resp["items"]) == 3
    b = run("rank", "-", "--backend", "fake", "--strategy", "pointwise", stdin=json.dumps(sample_request).encode())
    assert b.returncode == 0 and json.loads(b.stdout)["strategy"] == "pointwise"


def test_rank_table_shows_titles_probabilities_and_reasons(sample_request):
    out = run("rank", "-", "--backend", "fake", "--table", stdin=json.dumps({**sample_request, "reasons": True}).encode())
    assert out.returncode == 0, out.stderr.decode()
    lines = out.stdout.decode().splitlines()
    assert lines[0].startswith("  1. ") and "P=" in lines[0]
    assert lines[1].strip() == "It is much like what you watched before."  # the fake backend's reason


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"\xff\xfe{not utf8", "not valid UTF-8"),
        (b'{"candidates": [', "not valid JSON"),
        (b'[1, 2]', "must be a JSON object"),
        (b'{"candidates": []}', "field: candidates"),
        (b'{"candidates": [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}]}', "field: candidates[1].id"),
        (b'{"candidates": [{"id": "a", "title": "A"}], "strategy": "magic"}', "valid strategy names"),
        (b'{"history": [{"id": "h", "title": "H", "rating": NaN}], "candidates": [{"id": "a", "title": "A"}]}',
         "field: history[0].rating"),
    ],
)
def test_bad_input_is_one_line_exit_2(payload, expected):
    proc = run("rank", "-", "--backend", "fake", stdin=payload)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize("env, field", [("LLM_REC_LISTWISE__KEYS", "listwise.keys"),
                                        ("LLM_REC_TRANSFORMERS__LISTWISE_KEY_CHOICE", "transformers.listwise_key_choice")])
def test_a_bad_setting_in_the_environment_is_one_line_exit_2(sample_request, env, field):
    import os

    proc = subprocess.run([*CLI, "rank", "-", "--backend", "fake"], input=json.dumps(sample_request).encode(),
                          capture_output=True, timeout=120, env={**os.environ, env: "bogus"})
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert f"invalid {field}" in err and env in err and "Traceback" not in err


def test_nan_rating_in_a_file_is_exit_2(tmp_path):
    path = tmp_path / "req.json"
    path.write_text('{"history": [{"id": "h", "title": "H", "rating": NaN}], "candidates": [{"id": "a", "title": "A"}]}')
    proc = run("rank", str(path), "--backend", "fake")
    assert proc.returncode == 2 and "field: history[0].rating" in proc.stderr.decode(), proc.stderr.decode()


def test_missing_file_and_unknown_backend(tmp_path, sample_request):
    proc = run("rank", str(tmp_path / "nope.json"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr.decode()
    path = tmp_path / "req.json"
    path.write_text(json.dumps(sample_request))
    proc = run("rank", str(path), "--backend", "nope")
    assert proc.returncode == 2 and "valid backend names" in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()


@pytest.mark.parametrize("command", ["serve", "batch"])
@pytest.mark.parametrize(("flag", "env", "expected"), [
    (None, None, "auto"),                      # the default: vLLM on a GPU, transformers on CPU
    ("transformers", None, "transformers"),    # --backend overrides
    ("vllm", "fake", "vllm"),                  # ... the environment too
    (None, "fake", None),                      # LLM_REC_BACKEND applies (Settings reads it)
])
def test_serve_and_batch_default_to_auto(monkeypatch, tmp_path, command, flag, env, expected):
    from typer.testing import CliRunner

    import llm_recommender.batch as batch_pkg
    import llm_recommender.server as server_pkg
    from llm_recommender.cli import app
    from llm_recommender.cli import serve as serve_cmd

    seen: dict = {}

    def fake_run_server(factory, settings):
        factory()

    def fake_run_batch(config, spec):
        seen.update(spec.kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(server_pkg, "run_server", fake_run_server)
    monkeypatch.setattr(serve_cmd, "make_recommender", lambda bundle, **kw: seen.update(kw))
    monkeypatch.setattr(batch_pkg, "run_batch", fake_run_batch)
    if env:
        monkeypatch.setenv("LLM_REC_BACKEND", env)
    else:
        monkeypatch.delenv("LLM_REC_BACKEND", raising=False)
    args = [command, *(["--backend", flag] if flag else [])]
    if command == "batch":
        (tmp_path / "users.jsonl").write_text("")
        args += [str(tmp_path / "users.jsonl"), str(tmp_path / "out"), "--no-ray"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen.get("backend") == expected


def test_strategy_help_names_every_registered_strategy():
    from llm_recommender.cli.common import STRATEGY_HELP

    # the registries as the package fills them (a fresh interpreter: tests register example components)
    listed = subprocess.run([sys.executable, "-c", "from llm_recommender.scorers import scorer_names; "
                             "print(' '.join(scorer_names()))"],
                            capture_output=True, text=True, timeout=120, check=True).stdout.split()
    names = listed
    missing = [n for n in names if n not in STRATEGY_HELP.replace(",", " ").replace(".", " ").split()]
    assert not missing, f"--strategy help does not name {missing}"
    help_text = " ".join(run("rank", "--help").stdout.decode().split())
    assert "itemknn" in help_text and "listwise" in help_text


def test_rank_serve_and_batch_take_the_shared_options_from_one_declaration():
    import dataclasses

    import typer.main

    from llm_recommender.cli import app
    from llm_recommender.cli.common import RecommenderOptions

    shared = {f.name for f in dataclasses.fields(RecommenderOptions)}
    assert len(shared) == 9
    commands = {c.name: c for c in typer.main.get_command(app).commands.values()}  # type: ignore[attr-defined]
    for name in ("rank", "serve", "batch"):
        params = [p.name for p in commands[name].params]
        assert shared <= set(params) and len(params) == len(set(params)), name


def test_eval_hands_every_option_to_eval_config(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import llm_recommender.evaluation.runner as runner
    from llm_recommender.cli import app
    from llm_recommender.cli.eval import OPTIONS

    assert set(OPTIONS) - {"fit_config"} <= set(runner.EvalConfig.model_fields)
    seen = {}

    class Captured(Exception):
        pass

    def capture(config):
        seen["config"] = config
        raise Captured

    monkeypatch.setattr(runner, "EvalRunner", capture)
    args = ["eval", "--users", "3", "--scorers", "popularity,random", "--position-bias", "--out", str(tmp_path),
            "--fit-config", '{"sequence": {"model": {"epochs": 1}}}', "--calibrators", "platt", "--llm-users", "2", "--fit-valid-users", "500"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, Captured), result.output
    config = seen["config"]
    assert (config.users, config.scorers, config.position_bias, config.out) == (3, ["popularity", "random"], True, tmp_path)
    assert config.fit_component_config == {"sequence": {"model": {"epochs": 1}}}
    assert (config.calibrators, config.llm_users, config.n_candidates) == (["platt"], 2, 20)  # 20: the default
    assert config.fit_valid_users == 500
    assert config.command.startswith("llm-rec ")


def test_fit_help_documents_the_generic_format():
    out = " ".join(run("fit", "--help").stdout.decode().split())
    for word in ("--dataset generic", "interactions.csv", "items.csv", "user_id", "item_id", "title", "timestamp",
                 "rating", "genres", "docs/data.md"):
        assert word in out, word


def test_the_demo_says_what_the_llm_did():
    """The demo's last lines say whether an LLM ranked (it used to print 'model loaded: False')."""
    from llm_recommender.cli.demo import llm_part

    plain = llm_part(["popularity", "sequence"], "none", "smollm2-135m")
    assert plain.startswith("The LLM did not rank: this bundle ranks with popularity, sequence")
    assert "--reasons llm asks smollm2-135m" in plain
    ranked = llm_part(["als", "llm_ranker"], "none", "m")
    assert ranked.startswith("The LLM ranked: llm_ranker") and "did not rank" not in ranked
    assert "was asked to phrase the reasons" in llm_part(["als"], "transformers", "m")
