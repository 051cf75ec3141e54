"""`gptoss train` end to end: from scratch on a small JSONL, export, generate from the result."""

from __future__ import annotations

import json

import torch

import gptoss
from gptoss.cli.main import main


def test_train_from_scratch_cli(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"say {w}"},
                          {"role": "assistant", "channel": "final", "content": w}]} for w in ("yes", "no", "maybe")]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "run"
    rc = main(["train", "--preset", "tiny", "--layers", "2", "--data", str(data), "--eval-data", str(data),
               "--out", str(out), "--steps", "6", "--batch-size", "3", "--eval-every", "3", "--warmup-steps", "2",
               "--no-fake-quant"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "3 training conversations" in printed and "exported" in printed
    lineage = json.loads((out / "model" / "original" / "lineage.json").read_text())
    assert lineage["steps"] == 6 and lineage["training_args"]["fake_quant"] is False
    model = gptoss.load(out / "model", dtype="float32")
    assert model.config.num_hidden_layers == 2
    assert len(model.generate([200006, 1428], max_tokens=3, temperature=0)) == 3


def test_train_reports_bad_data(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    rc = main(["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "o"), "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "bad.jsonl:1" in err and "no assistant message" in err


def test_trimmed_vocabulary_model(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"say {w}"},
                          {"role": "assistant", "channel": "final", "content": w}]} for w in ("yes", "no")]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "run"
    rc = main(["train", "--preset", "tiny", "--layers", "2", "--trim-vocab", "--data", str(data), "--out", str(out),
               "--steps", "3", "--batch-size", "2", "--warmup-steps", "1"])
    assert rc == 0, capsys.readouterr().err
    model = gptoss.load(out / "model", dtype="float32")
    kept = set(model.config.kept_token_ids)
    assert 21 < len(kept) < 400 and 200002 in kept
    emb = model.transformer.embedding.weight
    assert emb.shape[0] == len(kept) + 1  # + the fallback row
    logits = model.logits([200006, 1428, 200008, 12345])  # 12345 is not kept: embeds as fallback
    assert logits.shape[-1] == 201088
    finite = torch.isfinite(logits[0]).nonzero().flatten().tolist()
    assert set(finite) == kept
    out_ids = model.generate([200006, 1428], max_tokens=8, temperature=1.0, seed=0)
    assert set(out_ids) <= kept
