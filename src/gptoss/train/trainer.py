"""Full-parameter training of a gpt-oss model: from scratch or from a checkpoint.

AdamW with a linear warm-up and cosine decay, gradient clipping, loss on assistant tokens only,
periodic evaluation, resumable checkpoints and an MXFP4 export with a lineage record. The same
code fine-tunes a real checkpoint; only the shape differs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.utils import parametrize
from torch.utils.checkpoint import checkpoint

from gptoss.model.transformer import DenseExpertWeight, Transformer
from gptoss.train.data import Example, batches
from gptoss.train.experts import dequantize_experts, quantize_experts
from gptoss.weights.save import save_checkpoint

STATE_FILE = "trainer_state.pt"


@dataclass
class TrainingArgs:
    out_dir: str = field(metadata={"help": "where checkpoints, logs and the exported model go"})
    steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "conversations per step"})
    max_seq_len: int = field(default=1024, metadata={"help": "tokens per conversation (longer are cut)"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final lr as a fraction of the peak"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decay (matrices only)"})
    grad_clip: float = field(default=1.0, metadata={"help": "max global gradient norm"})
    eval_every: int = field(default=100, metadata={"help": "steps between evaluations (0 = never)"})
    save_every: int = field(default=200, metadata={"help": "steps between resumable checkpoints"})
    seed: int = field(default=0, metadata={"help": "data order and init seed"})
    fake_quant: bool = field(default=True, metadata={"help": "train experts through MXFP4 rounding"})
    fake_quant_from: float = field(default=0.0, metadata={"help": "with --fake-quant: start the MXFP4 rounding "
                                                                  "at this fraction of the steps (it costs time)"})
    loss_chunk: int = field(default=512, metadata={"help": "positions unembedded at once"})
    length_bucket: int = field(default=0, metadata={"help": "sort windows of this many batches by length "
                                                            "(less padding; 0 = plain shuffle)"})
    curriculum_steps: int = field(default=0, metadata={"help": "the first steps draw batches from the "
                                                               "curriculum data instead (same optimizer and "
                                                               "schedule)"})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_seq_len", "loss_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.lr > 0:
            raise ValueError("lr must be > 0")
        if not 0 <= self.curriculum_steps <= self.steps:
            raise ValueError("curriculum_steps must be between 0 and steps")


@dataclass
class StepLog:
    step: int
    loss: float
    lr: float
    tokens_per_s: float
    eval_loss: float | None = None
    eval_accuracy: float | None = None


def lr_factor(step: int, args: TrainingArgs) -> float:
    if step < args.warmup_steps:
        return (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return args.min_lr_ratio + (1 - args.min_lr_ratio) * cosine


def masked_loss(model: Transformer, tokens: torch.Tensor, mask: torch.Tensor, chunk: int
                ) -> tuple[torch.Tensor, int, int]:
    """Mean next-token cross-entropy over masked targets; (loss, n_targets, n_correct).

    Only scored positions are unembedded, in checkpointed chunks, so a 201088-row vocabulary
    never materialises a (B, T, V) tensor."""
    hidden = model(tokens, return_hidden=True)  # (B, T, H)
    target_mask = mask[:, 1:]
    h = hidden[:, :-1][target_mask]  # (N, H)
    targets = tokens[:, 1:][target_mask]  # (N,)
    if model.vocab is not None:  # trimmed vocabulary: score against rows
        targets = model.vocab.rows(targets)
        if bool((targets >= model.unembedding.out_features).any()):
            raise ValueError("training targets include token ids outside the model's kept vocabulary")
    if targets.numel() == 0:
        return hidden.sum() * 0.0, 0, 0

    def chunk_loss(hc: torch.Tensor, tc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model.unembedding(hc).float()
        return torch.nn.functional.cross_entropy(logits, tc, reduction="sum"), (logits.argmax(-1) == tc).sum()

    total = hidden.new_zeros((), dtype=torch.float32)
    correct = 0
    for i in range(0, len(targets), chunk):
        loss_i, right = checkpoint(chunk_loss, h[i:i + chunk], targets[i:i + chunk], use_reentrant=False)
        total = total + loss_i
        correct += int(right)
    return total / len(targets), len(targets), correct


class Trainer:
    """Owns the model in training form (dense float experts), the optimizer and the schedule."""

    def __init__(self, model: Transformer, args: TrainingArgs, lineage: dict | None = None) -> None:
        self.args = args
        self.model = dequantize_experts(model, torch.float32).float()
        self._set_fake_quant(0)
        self.model.requires_grad_(True)
        self.model.rope.requires_grad_(False)
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
        rest = [p for n, p in self.model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                      {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, args))
        self.step = 0
        self.out = Path(args.out_dir)
        self.lineage = lineage or {}
        self.history: list[StepLog] = []

    def _set_fake_quant(self, step: int) -> None:
        on = self.args.fake_quant and step >= self.args.fake_quant_from * self.args.steps
        for block in self.model.block:
            for w in (block.mlp.mlp1_weight, block.mlp.mlp2_weight):
                assert isinstance(w, DenseExpertWeight)
                w.fake_quant = on

    # -- persistence ---------------------------------------------------------------------------
    def save_state(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / (STATE_FILE + ".tmp")
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                    "sched": self.sched.state_dict(), "step": self.step, "args": asdict(self.args),
                    "history": [asdict(h) for h in self.history]}, tmp)
        tmp.replace(self.out / STATE_FILE)  # never a half-written state file
        return self.out / STATE_FILE

    def try_resume(self) -> bool:
        path = self.out / STATE_FILE
        if not path.exists():
            return False
        state = torch.load(path, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step = state["step"]
        self.history = [StepLog(**h) for h in state.get("history", [])]
        return True

    def export(self, dest: str | Path | None = None) -> Path:
        """An inference checkpoint (MXFP4 experts) plus lineage.json; returns its directory."""
        model = copy.deepcopy(self.model)
        for module in model.modules():  # trained parametrizations (e.g. shared digit rows) become plain weights
            if parametrize.is_parametrized(module):
                for name in list(module.parametrizations):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        model = quantize_experts(model)
        dest = Path(dest) if dest else self.out / "model"
        wdir = save_checkpoint(model, dest)
        lineage = {**self.lineage, "steps": self.step, "training_args": asdict(self.args),
                   "final": asdict(self.history[-1]) if self.history else None,
                   "weights_sha256": hashlib.sha256((wdir / "model.safetensors").read_bytes()).hexdigest()}
        (wdir / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n")
        return wdir

    # -- loops ---------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, examples: Sequence[Example]) -> tuple[float, float]:
        """(mean loss per target token, next-token accuracy) over ``examples``."""
        self.model.eval()
        total, n, right = 0.0, 0, 0
        for tokens, mask in batches(examples, self.args.batch_size, self.args.max_seq_len, 0, epochs=1,
                                    bucket=len(examples)):
            loss, count, correct = masked_loss(self.model, tokens, mask, self.args.loss_chunk)
            total += float(loss) * count
            n += count
            right += correct
        self.model.train()
        return total / max(n, 1), right / max(n, 1)

    def train(self, data: Sequence[Example], eval_data: Sequence[Example] = (),
              on_step: Callable[[StepLog], None] | None = None,
              stop: Callable[[], bool] | None = None, curriculum: Sequence[Example] = ()) -> list[StepLog]:
        """Train to ``args.steps`` (or until ``stop()`` says so, checked after each step); state is saved.

        Steps before ``args.curriculum_steps`` take their batches from ``curriculum`` (e.g. short conversations
        that teach a skill fast), the rest from ``data``."""
        args = self.args
        if self.step < args.curriculum_steps and not curriculum:
            raise ValueError(f"curriculum_steps is {args.curriculum_steps} but no curriculum data was given")

        def stream_of(examples: Sequence[Example]) -> Iterator:
            return batches(examples, args.batch_size, args.max_seq_len, args.seed + self.step,
                           bucket=args.length_bucket)

        early: Iterator | None = stream_of(curriculum) if self.step < args.curriculum_steps else None
        stream: Iterator | None = None
        self.model.train()
        while self.step < args.steps:
            if early is not None and self.step < args.curriculum_steps:
                tokens, mask = next(early)
            else:
                stream = stream or stream_of(data)
                tokens, mask = next(stream)
            self._set_fake_quant(self.step)
            start = time.perf_counter()
            loss, _, _ = masked_loss(self.model, tokens, mask, args.loss_chunk)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.grad_clip)
            self.opt.step()
            self.sched.step()
            self.step += 1
            log = StepLog(self.step, float(loss.detach()), self.sched.get_last_lr()[0],
                          tokens.numel() / (time.perf_counter() - start))
            if eval_data and args.eval_every and (self.step % args.eval_every == 0 or self.step == args.steps):
                log.eval_loss, log.eval_accuracy = self.evaluate(eval_data)
            self.history.append(log)
            if on_step:
                on_step(log)
            if args.save_every and self.step % args.save_every == 0:
                self.save_state()
            if stop is not None and self.step < args.steps and stop():
                break
        self.save_state()
        return self.history
