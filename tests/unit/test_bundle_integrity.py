"""What a bundle load checks before it trusts a file: manifest paths stay inside the bundle folder
(nothing outside is opened or hashed), bundle.json matches its own digest, and files the manifest does
not list are reported (or refused when strict). Tiny generated data; components that need no LLM."""

from __future__ import annotations

import json
import logging
import os

import pytest

from llm_recommender import Recommender
from llm_recommender.bundle import Bundle, BundleError, FitConfig, fit_bundle
from llm_recommender.bundle import manifest as manifest_mod
from llm_recommender.bundle.manifest import manifest_digest, sha256_file
from tests.synthetic import hash_encoder, write_generic_dataset


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LLM_REC_STRICT_BUNDLE", raising=False)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("fitted")
    cfg = FitConfig(dataset="generic", data_dir=write_generic_dataset(root / "data"),
                    components=["popularity", "cooccurrence"], valid_users=20, min_gain=-1.0)
    return fit_bundle(cfg, root / "bundle", text_encoder=hash_encoder, log=lambda m: None)


@pytest.fixture
def bundle_dir(fitted, tmp_path):
    import shutil

    return shutil.copytree(fitted, tmp_path / "bundle")


def edit_manifest(folder, change, *, redigest=True):
    """Change bundle.json as someone who also recomputes its digest would (or not)."""
    path = folder / "bundle.json"
    raw = json.loads(path.read_text())
    change(raw)
    if redigest:
        raw["digest"] = manifest_digest(raw)
    path.write_text(json.dumps(raw, indent=1))


@pytest.fixture
def hashed(monkeypatch):
    """Every file the load hashes."""
    seen = []

    def spy(path):
        seen.append(os.path.realpath(path))
        return sha256_file(path)

    monkeypatch.setattr(manifest_mod, "sha256_file", spy)
    return seen


def test_a_fresh_bundle_carries_a_digest_and_loads_without_warnings(bundle_dir, caplog):
    raw = json.loads((bundle_dir / "bundle.json").read_text())
    assert raw["digest"] == manifest_digest(raw) and raw["digest"].startswith("sha256:")
    with caplog.at_level(logging.WARNING):
        Bundle.load(bundle_dir, strict=True)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_manifest_path_outside_the_bundle_is_refused_and_never_hashed(bundle_dir, tmp_path, hashed, how):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    meta = {"size": secret.stat().st_size, "sha256": sha256_file(secret)}  # a table that would verify
    rel = {"dotdot": "../secret.txt", "absolute": str(secret), "symlink": "notes.txt"}[how]
    if how == "symlink":
        (bundle_dir / "notes.txt").symlink_to(secret)
    edit_manifest(bundle_dir, lambda raw: raw["files"].__setitem__(rel, meta))
    with pytest.raises(BundleError) as err:
        Bundle.load(bundle_dir)
    assert err.value.param == f"bundle.files[{rel!r}]"
    assert "refused, the file was not opened" in err.value.message
    assert str(secret) not in hashed and hashed == []  # refused before any file was hashed


def test_a_symlink_out_of_the_bundle_under_a_name_the_loader_opens_is_refused(bundle_dir, tmp_path, hashed):
    outside = tmp_path / "elsewhere.json"
    outside.write_text((bundle_dir / "fusion.json").read_text())
    (bundle_dir / "fusion.json").unlink()
    (bundle_dir / "fusion.json").symlink_to(outside)
    with pytest.raises(BundleError) as err:
        Bundle.load(bundle_dir)
    assert err.value.param == "bundle.files['fusion.json']" and "outside the bundle folder" in err.value.message
    assert str(outside) not in hashed


def test_an_edited_manifest_is_a_clear_error(bundle_dir):
    edit_manifest(bundle_dir, lambda raw: raw["fusion"]["coefficients"].update({"popularity": 99.0}), redigest=False)
    with pytest.raises(BundleError) as err:
        Bundle.load(bundle_dir)
    assert err.value.param == "bundle.digest"
    assert "edited or corrupted" in err.value.message


def test_a_manifest_written_before_digests_loads_with_one_warning(bundle_dir, caplog):
    edit_manifest(bundle_dir, lambda raw: raw.pop("digest"), redigest=False)
    with caplog.at_level(logging.WARNING, logger="llm_recommender.bundle.manifest"):
        Bundle.load(bundle_dir)
        Bundle.load(bundle_dir)
    warnings = [r.getMessage() for r in caplog.records if "unverified" in r.getMessage()]
    assert len(warnings) == 1 and "no digest" in warnings[0]
    with pytest.raises(BundleError, match="no digest"):
        Bundle.load(bundle_dir, strict=True)


def test_files_the_manifest_does_not_list_are_a_warning_or_refused_when_strict(bundle_dir, caplog, monkeypatch):
    (bundle_dir / "components" / "popularity" / "extra.npy").write_bytes(b"\0" * 8)
    (bundle_dir / "README.txt").write_text("hello")
    with caplog.at_level(logging.WARNING, logger="llm_recommender.bundle.manifest"):
        Bundle.load(bundle_dir)
    [warning] = [r.getMessage() for r in caplog.records if "does not list" in r.getMessage()]
    assert "README.txt, components/popularity/extra.npy" in warning
    with pytest.raises(BundleError) as err:
        Bundle.load(bundle_dir, strict=True)
    assert err.value.param == "bundle.files" and "README.txt" in err.value.message
    monkeypatch.setenv("LLM_REC_STRICT_BUNDLE", "1")  # every door: the CLI, the server, batch workers
    with pytest.raises(BundleError, match="does not list"):
        Recommender.load(bundle_dir)


def test_a_component_name_that_is_a_path_is_refused(bundle_dir):
    edit_manifest(bundle_dir, lambda raw: raw["components"][0].__setitem__("name", "../../x"))
    with pytest.raises(BundleError) as err:
        Bundle.load(bundle_dir)
    assert err.value.param == "bundle.components[0].name"
