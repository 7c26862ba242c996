"""How a fitted component scores can change when its bundle loads (``component_config``: the trained ranker's
backend and server), what it learned cannot; every refusal names the field."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llm_recommender.bundle import Bundle, FitConfig, fit_bundle
from llm_recommender.errors import InvalidRequestError
from llm_recommender.ranker.component import LLMRankerComponent
from tests.synthetic import write_generic_dataset


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-config")
    cfg = FitConfig(dataset="generic", data_dir=write_generic_dataset(root / "data"),
                    components=["popularity", "cooccurrence"], valid_users=20, min_gain=-1.0)
    return fit_bundle(cfg, root / "bundle", log=lambda m: None)


def test_what_a_component_learned_cannot_change_at_load(bundle_dir):
    with pytest.raises(InvalidRequestError, match="fixed by the fit") as err:
        Bundle.load(bundle_dir, component_config={"cooccurrence": {"normalization": "count"}})
    assert err.value.param == "component_config.cooccurrence.normalization"
    with pytest.raises(InvalidRequestError, match="does not have") as err:
        Bundle.load(bundle_dir, component_config={"llm_ranker": {"backend": "openai"}})
    assert err.value.param == "component_config.llm_ranker"


def test_the_rankers_serving_fields_change_and_nothing_else(bundle_dir):
    space = Bundle.load(bundle_dir).space
    comp = LLMRankerComponent(space, {"readout": "slot", "item_tokens": "als"})
    comp.configure_serving({"backend": "openai", "server": {"base_url": "http://127.0.0.1:9/v1"}})
    assert comp.config.backend == "openai" and comp.config.server["base_url"] == "http://127.0.0.1:9/v1"
    assert comp.config.readout == "slot"  # the rest is the fit's
    with pytest.raises(InvalidRequestError, match="readout was fixed by the fit") as err:
        comp.configure_serving({"readout": "label"})
    assert err.value.param == "component_config.llm_ranker.readout"
    with pytest.raises(InvalidRequestError):
        comp.configure_serving({"backend": "tensorflow"})  # a serving field still validates
    assert comp.config.backend == "openai"


def test_the_cli_option_needs_a_bundle_and_json(bundle_dir, tmp_path):
    from llm_recommender.cli import app

    request = tmp_path / "req.json"
    request.write_text(json.dumps({"history": [{"id": "i1", "title": "A"}]}))
    no_bundle = CliRunner().invoke(app, ["rank", str(request), "--component-config", "{}"])
    assert no_bundle.exit_code != 0 and "needs --bundle" in no_bundle.output
    bad = CliRunner().invoke(app, ["rank", str(request), "--bundle", str(bundle_dir), "--component-config", "{oops"])
    assert bad.exit_code != 0 and "not JSON" in bad.output
    fixed = CliRunner().invoke(app, ["rank", str(request), "--bundle", str(bundle_dir), "--component-config",
                                     '{"popularity": {"anything": 1}}'])
    assert isinstance(fixed.exception, InvalidRequestError) and "fixed by the fit" in str(fixed.exception)
    assert fixed.exception.param == "component_config.popularity.anything"  # the CLI's error handler prints it


def test_serve_model_refuses_a_bundle_without_a_trained_ranker(bundle_dir):
    from llm_recommender.cli import app

    result = CliRunner().invoke(app, ["serve-model", "--bundle", str(bundle_dir)])
    assert isinstance(result.exception, InvalidRequestError) and result.exception.param == "bundle"
    assert "has no llm_ranker component" in str(result.exception)
    both = CliRunner().invoke(app, ["serve-model", "--bundle", str(bundle_dir), "--model", "x"])
    assert both.exit_code != 0 and "not both" in both.output
