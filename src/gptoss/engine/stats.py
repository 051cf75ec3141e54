"""Measurements for ``gptoss bench``: process memory, host memory bandwidth, and the result record.

Memory. :func:`peak_rss_bytes` is the kernel's high-water mark of resident memory for this
process (``getrusage(RUSAGE_SELF).ru_maxrss``); it never goes down, so anything allocated at any
time counts. Memory-mapped checkpoint pages that have been touched are resident and count too,
which is what we want: that is memory the model occupies. :func:`current_rss_bytes` is the RSS
right now (psutil).

Bandwidth. :func:`measure_memory_bandwidth` times ``dst.copy_(src)`` on two buffers of
``nbytes / 2`` each, with torch's intra-op thread pool (``torch.get_num_threads()`` threads), and
counts read + write bytes (``2 * nbytes / 2`` per copy), the STREAM "copy" convention. Write-
allocate traffic is not counted, so on most CPUs the true DRAM traffic is up to 1.5x the figure;
it is a practical ceiling for streaming weights, not a datasheet number. The best of several
repetitions is kept and the whole measurement stops after about ``seconds``.

Because ``ru_maxrss`` is a high-water mark, a benchmark must either measure bandwidth before
anything else with a buffer small next to the model (then the peak is ``max(baseline + buffer,
model)``, which for a tiny model is the buffer), or read the peak *before* allocating the buffer.
``gptoss bench`` does the latter: it records the peak after decoding and only then measures
bandwidth, so the 256 MiB buffer never shows in the reported peak.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

import psutil
import torch

from gptoss.config import ModelConfig

DEFAULT_BANDWIDTH_BYTES = 256 * 1024**2


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes (a high-water mark)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB; macOS reports bytes.
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024


def current_rss_bytes() -> int:
    """Resident set size of this process now, in bytes."""
    return int(psutil.Process().memory_info().rss)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_memory_bandwidth(seconds: float = 1.0, nbytes: int = DEFAULT_BANDWIDTH_BYTES,
                             device: str | torch.device = "cpu", min_reps: int = 3,
                             max_reps: int = 200, mode: str = "copy") -> float:
    """Best observed memory bandwidth in bytes/s.

    ``mode="copy"``: copies ``nbytes / 2`` bytes between two buffers, read + write bytes counted.
    ``mode="read"``: sums an ``nbytes`` float32 buffer, bytes read counted -- what decoding does
    with its weights, so the bound of a decode rate is this bandwidth over the bytes read per token.
    Buffers are touched first (page faults are not timed); the operation runs at least ``min_reps``
    times and until ``seconds`` have passed or ``max_reps`` runs are done. The buffers are freed
    before returning. Uses torch's threads.
    """
    if seconds <= 0 or nbytes < 2 * 4096:
        raise ValueError(f"need seconds > 0 and nbytes >= 8192, got {seconds!r}, {nbytes!r}")
    if mode not in ("copy", "read"):
        raise ValueError(f"mode must be 'copy' or 'read', got {mode!r}")
    dev = torch.device(device)
    if mode == "copy":
        n = nbytes // 2 // 8  # int64 elements per buffer
        src = torch.ones(n, dtype=torch.int64, device=dev)
        dst = torch.zeros(n, dtype=torch.int64, device=dev)
        moved = 2 * n * 8

        def once() -> None:
            dst.copy_(src)
    else:
        n = nbytes // 4
        src = dst = torch.ones(n, dtype=torch.float32, device=dev)
        moved = n * 4

        def once() -> None:
            src.sum()
    best = 0.0
    _sync(dev)
    start = time.perf_counter()
    for rep in range(max_reps):
        t0 = time.perf_counter()
        once()
        _sync(dev)
        dt = time.perf_counter() - t0
        if dt > 0:
            best = max(best, moved / dt)
        if rep + 1 >= min_reps and time.perf_counter() - start >= seconds:
            break
    return best  # the buffers go with this frame and the closure


def bandwidth_share(weight_bytes_per_token: int, decode_tok_s: float, bandwidth_bytes_s: float) -> float:
    """Fraction of the measured bandwidth that streaming the weights at this decode rate needs."""
    return weight_bytes_per_token * decode_tok_s / bandwidth_bytes_s if bandwidth_bytes_s > 0 else 0.0


def weight_bytes_read_per_token(config: ModelConfig, dense_itemsize: int = 2) -> int:
    """Weight bytes read to decode one token, with dense weights of ``dense_itemsize`` bytes.

    :meth:`ModelConfig.weight_bytes` counts dense weights as BF16 (2 bytes); when the model runs
    in float32 those are held, and read, as 4 bytes each. MXFP4 experts stay packed either way.
    KV-cache reads are not included.
    """
    read = config.weight_bytes()["read_per_token"]
    h, i = config.hidden_size, config.intermediate_size
    mx_read = config.num_hidden_layers * config.experts_per_token * ((2 * i * h + h * i) // 32 * 17)
    return mx_read + (read - mx_read) * dense_itemsize // 2


@dataclass
class BenchResult:
    """One ``gptoss bench`` run. Times are seconds, rates tokens/s, sizes bytes.

    ``prefill_seconds`` covers the prompt forward pass(es) that produce the first token's logits.
    ``decode_seconds`` covers ``decode_tokens = gen_tokens - 1`` steps, each sampling a token
    (greedy) and running it through the model; the first generated token comes from the prefill
    logits and needs no decode forward, so it is not counted. ``decode_tok_s = decode_tokens /
    decode_seconds``.
    """

    model: str
    dtype: str
    device: str
    threads: int
    prompt_tokens: int
    gen_tokens: int
    decode_tokens: int
    load_seconds: float
    prefill_seconds: float
    prefill_tok_s: float
    decode_seconds: float
    decode_tok_s: float
    peak_rss_bytes: int
    rss_bytes: int
    weight_bytes_read_per_token: int
    bandwidth_bytes_s: float
    bandwidth_share: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
