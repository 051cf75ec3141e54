"""The bundled-model manifest: written, verified, and failing loudly on missing or altered files."""

from __future__ import annotations

import json

import pytest

from gptoss import models
from gptoss.models import MANIFEST, default_model_path, resolve_model, verify_manifest, write_manifest
from gptoss.weights.safetensors_io import CheckpointError


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    (tmp_path / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    write_manifest(tmp_path)
    return tmp_path


def test_manifest_lists_every_file_in_sha256sum_format(bundle):
    lines = (bundle / MANIFEST).read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["config.json", "model.safetensors"]
    assert all(len(line.split("  ")[0]) == 64 for line in lines)
    verify_manifest(bundle)
    assert default_model_path(bundle) == bundle


def test_corrupt_file_is_named(bundle):
    data = bytearray((bundle / "model.safetensors").read_bytes())
    data[100] ^= 1
    (bundle / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 does not match .*corrupt"):
        default_model_path(bundle)


def test_missing_file_and_missing_bundle(bundle, tmp_path_factory):
    (bundle / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: listed in .* but missing"):
        default_model_path(bundle)
    empty = tmp_path_factory.mktemp("none")
    with pytest.raises(CheckpointError, match=r"bundled gpt-oss-tiny is not installed.*--model PATH"):
        default_model_path(empty)


def test_explicit_path_wins(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "BUNDLED_DIR", tmp_path / "absent")
    assert resolve_model("/some/where") == "/some/where"
    with pytest.raises(CheckpointError, match="not installed"):
        resolve_model(None)


def test_the_bundled_model_matches_its_manifest():
    """The checkpoint committed in the repository is complete, within the size budget, and loads."""
    import gptoss

    root = default_model_path()
    size = sum(f.stat().st_size for f in root.iterdir() if f.is_file())
    assert size <= 20 * 1024 * 1024, size
    lineage = json.loads((root / "lineage.json").read_text())
    assert lineage["weights_sha256"] in (root / MANIFEST).read_text()
    model = gptoss.load(str(root), dtype="float32")
    cfg = model.config
    assert cfg.kept_token_ids is not None and cfg.num_hidden_layers >= 2
    assert cfg.num_experts > cfg.experts_per_token  # a real mixture, routed


def test_the_bundled_model_was_built_by_the_default_recipe():
    """`gptoss train-tiny` with no options rebuilds the bundled model: its lineage records exactly the defaults."""
    from gptoss.cli.main import build_parser
    from gptoss.cli.train_tiny import RECIPE, _argv

    args = build_parser(["train-tiny"]).parse_args(["train-tiny"])
    lineage = json.loads((default_model_path() / "lineage.json").read_text())
    assert lineage["command"] == "gptoss train-tiny " + _argv(args, RECIPE["steps"])
