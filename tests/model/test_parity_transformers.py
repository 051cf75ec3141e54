"""Parity with Hugging Face transformers (fp32, eager attention) on random tiny checkpoints.

The reference model is loaded by transformers itself from the HF-layout files we write, so this
also checks that our writer produces checkpoints transformers reads as gpt-oss.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import gptoss

transformers = pytest.importorskip("transformers")

SEQ_LEN = 48  # longer than both sliding windows (8 and 16)
REL_TOL = 1e-4


def load_reference(path):
    from transformers import GptOssForCausalLM, Mxfp4Config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GptOssForCausalLM.from_pretrained(
            path, dtype=torch.float32, quantization_config=Mxfp4Config(dequantize=True),
            attn_implementation="eager")
    # transformers 4.57 returns bf16 experts even when fp32 is asked (SPEC §2.3).
    return model.float().eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-position max-abs error relative to the reference's max-abs logit."""
    return (a - b).abs().amax(-1) / b.abs().amax(-1)


@pytest.fixture(scope="module")
def prompt() -> list[int]:
    g = torch.Generator().manual_seed(1234)
    return torch.randint(0, 199998, (SEQ_LEN,), generator=g).tolist()


@pytest.mark.parametrize("name", ["tiny", "alt"])
@pytest.mark.parametrize("layout", ["original", "hf"])
def test_logits_match_transformers(checkpoint_factory, prompt, name, layout):
    ours = gptoss.load(checkpoint_factory(name, layout), dtype="float32")
    ref = load_reference(checkpoint_factory(name, "hf"))
    with torch.no_grad():
        expected = ref(torch.tensor([prompt])).logits[0].float()
    got = ours.logits(prompt)
    assert got.dtype == torch.float32 and got.shape == (SEQ_LEN, ours.config.vocab_size)
    err = rel_err(got, expected)
    assert float(err.max()) <= REL_TOL, f"worst position {int(err.argmax())}: {float(err.max()):.3g}"


@pytest.mark.parametrize("name", ["tiny", "alt"])
def test_greedy_continuation_matches_transformers(checkpoint_factory, prompt, name):
    ours = gptoss.load(checkpoint_factory(name, "hf"), dtype="float32")
    ref = load_reference(checkpoint_factory(name, "hf"))
    with torch.no_grad():
        out = ref.generate(torch.tensor([prompt[:12]]), max_new_tokens=32, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    expected = out[0, 12:].tolist()
    got = ours.generate(prompt[:12], max_tokens=32, temperature=0)
    assert len(expected) == 32
    assert got == expected


def test_parity_fixture_exercises_sinks_and_window(checkpoint_factory, prompt):
    """Guard the test's own sensitivity: zeroing the sinks or widening the band must move the
    logits far beyond the parity tolerance, so the checks above would catch such bugs."""
    model = gptoss.load(checkpoint_factory("tiny", "original"), dtype="float32")
    base = model.logits(prompt)
    for block in model.transformer.block:
        block.attn.sinks.data.zero_()
    assert float(rel_err(model.logits(prompt), base).max()) > 100 * REL_TOL
    model = gptoss.load(checkpoint_factory("tiny", "original"), dtype="float32")
    for block in model.transformer.block:
        if block.attn.window is not None:
            block.attn.window += 1
    err = rel_err(model.logits(prompt), base)
    assert float(err[:8].max()) < REL_TOL  # inside the window nothing changes
    assert float(err[8:].max()) > 100 * REL_TOL
