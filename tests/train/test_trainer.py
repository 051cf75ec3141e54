"""Training: data masks, loss, learning a tiny task, resume, MXFP4 export."""

from __future__ import annotations

import json

import pytest
import torch

import gptoss
from gptoss.harmony.render import assistant_message, harmony_encoding, system_message, user_message
from gptoss.train.data import encode_conversation, load_jsonl
from gptoss.train.trainer import Trainer, TrainingArgs, lr_factor


def convo(q: str, a: str):
    return [system_message("low"), user_message(q), assistant_message(f"Answer {a}.", "analysis"),
            assistant_message(a, "final")]


def test_mask_covers_only_sampled_assistant_tokens():
    ex = encode_conversation(convo("What is 2+2?", "4"))
    enc = harmony_encoding()
    learned = enc.decode([t for t, m in zip(ex.tokens, ex.mask, strict=True) if m])
    # <|end|> is not a stop token, so the model itself samples the second message's header.
    assert learned == ("<|channel|>analysis<|message|>Answer 4.<|end|>"
                       "<|start|>assistant<|channel|>final<|message|>4<|return|>")
    context = enc.decode([t for t, m in zip(ex.tokens, ex.mask, strict=True) if not m])
    assert "What is 2+2?" in context and context.count("<|start|>assistant") == 1


def test_earlier_analysis_is_context_dropped_like_inference():
    msgs = [*convo("first?", "one"), user_message("second?"), assistant_message("two", "final")]
    ex = encode_conversation(msgs)
    text = harmony_encoding().decode(ex.tokens)
    assert "Answer one." not in text and "one<|end|>" in text and text.endswith("two<|return|>")


def test_lr_schedule():
    args = TrainingArgs(out_dir="x", steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, args) == pytest.approx(0.1) and lr_factor(9, args) == pytest.approx(1.0)
    assert lr_factor(99, args) == pytest.approx(0.1, abs=0.01)


def test_training_learns_and_resumes_and_exports(tiny_checkpoint, tmp_path):
    data_file = tmp_path / "data.jsonl"
    pairs = [("colour of the sky?", "blue"), ("colour of grass?", "green"), ("capital of France?", "Paris")]
    with data_file.open("w") as f:
        for q, a in pairs:
            msgs = [m.to_dict() for m in convo(q, a)]
            f.write(json.dumps({"messages": msgs}, default=str) + "\n")
    data = load_jsonl(data_file)
    model = gptoss.load(tiny_checkpoint, dtype="float32").transformer
    args = TrainingArgs(out_dir=str(tmp_path / "run"), steps=40, batch_size=3, lr=3e-3, warmup_steps=5,
                        eval_every=40, save_every=20, fake_quant=True)
    trainer = Trainer(model, args, lineage={"data": str(data_file)})
    before, _ = trainer.evaluate(data)
    history = trainer.train(data, data)
    after, _ = trainer.evaluate(data)
    assert after < 0.5 * before, (before, after)
    assert history[-1].eval_loss == pytest.approx(after, rel=1e-4)
    # Resume: a new trainer continues from the saved step.
    again = Trainer(gptoss.load(tiny_checkpoint, dtype="float32").transformer,
                    TrainingArgs(**{**args.__dict__, "steps": 45}))
    assert again.try_resume() and again.step == 40
    again.train(data)
    assert again.step == 45
    # Export: MXFP4 experts, loads with gptoss.load, behaves like the trained model.
    wdir = trainer.export()
    lineage = json.loads((wdir / "lineage.json").read_text())
    assert lineage["steps"] == 40 and lineage["data"] == str(data_file)
    served = gptoss.load(wdir.parent, dtype="float32")
    assert served.transformer.block[0].mlp.mlp1_weight.blocks.dtype == torch.uint8
    ex = data[0]
    ref = trainer.model(torch.tensor([ex.tokens]))[0]
    got = served.logits(ex.tokens)
    # fake-quant training means exporting changes nothing but bf16 rounding of dense weights
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.95


def test_short_form_drops_the_system_message():
    full, short = encode_conversation(convo("What is 2+2?", "4")), encode_conversation(convo("What is 2+2?", "4"),
                                                                                        system=False)
    text = harmony_encoding().decode(short.tokens)
    assert text.startswith("<|start|>user<|message|>What is 2+2?") and "<|start|>system" not in text
    learned = [t for t, m in zip(full.tokens, full.mask, strict=True) if m]
    assert learned == [t for t, m in zip(short.tokens, short.mask, strict=True) if m]
    assert len(short.tokens) < len(full.tokens)


def test_curriculum_steps_draw_from_the_curriculum(tiny_checkpoint, tmp_path):
    """The first curriculum_steps batches come from the curriculum data, the rest from the main data; resuming
    past the curriculum needs no curriculum data; a curriculum without data is a clear error."""
    early = [encode_conversation(convo("sky?", "blue"), system=False)]
    main = [encode_conversation(convo("grass?", "green"))]
    args = TrainingArgs(out_dir=str(tmp_path / "run"), steps=6, batch_size=1, warmup_steps=1, eval_every=0,
                        save_every=0, curriculum_steps=4, fake_quant=False)
    seen: list[int] = []
    trainer = Trainer(gptoss.load(tiny_checkpoint, dtype="float32").transformer, args)
    forward = trainer.model.forward

    def spy(tokens, *a, **kw):
        seen.append(len(tokens[0]))
        return forward(tokens, *a, **kw)

    trainer.model.forward = spy
    trainer.train(main, curriculum=early)
    assert seen == [len(early[0].tokens)] * 4 + [len(main[0].tokens)] * 2 and len(early[0].tokens) != len(
        main[0].tokens)
    later = Trainer(gptoss.load(tiny_checkpoint, dtype="float32").transformer,
                    TrainingArgs(**{**args.__dict__, "steps": 7}))
    assert later.try_resume() and later.step == 6
    later.train(main)  # past the curriculum: no curriculum data needed
    assert later.step == 7
    with pytest.raises(ValueError, match="no curriculum data"):
        Trainer(gptoss.load(tiny_checkpoint, dtype="float32").transformer,
                TrainingArgs(**{**args.__dict__, "out_dir": str(tmp_path / "b")})).train(main)
    with pytest.raises(ValueError, match="curriculum_steps"):
        TrainingArgs(out_dir="x", steps=3, curriculum_steps=4)
