"""``gptoss bench`` end to end on a tiny random checkpoint, and the measurement helpers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gptoss.cli.main import main
from gptoss.config import preset
from gptoss.engine import stats
from gptoss.weights.random_ckpt import write_random_checkpoint

FIELDS = {
    "model", "dtype", "device", "threads", "prompt_tokens", "gen_tokens", "decode_tokens", "load_seconds",
    "prefill_seconds", "prefill_tok_s", "decode_seconds", "decode_tok_s", "peak_rss_bytes", "rss_bytes",
    "weight_bytes_read_per_token", "bandwidth_bytes_s", "bandwidth_share",
}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_bench")
    write_random_checkpoint(path, preset("tiny", num_hidden_layers=2), "original", seed=0)
    return path


def test_bench_writes_json_and_table(tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nested" / "dir" / "bench.json"  # parent dirs are created
    rc = main(["bench", "--model", str(tiny_ckpt), "--prompt-tokens", "16", "--gen-tokens", "4",
               "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert set(d) >= FIELDS | {"copy_bandwidth_bytes_s"}
    assert d["copy_bandwidth_bytes_s"] > 100e6
    assert d["model"] == str(tiny_ckpt)
    assert d["dtype"] == "bfloat16" and d["device"] == "cpu" and d["threads"] >= 1
    assert d["prompt_tokens"] == 16 and d["gen_tokens"] == 4 and d["decode_tokens"] == 3
    for key in ("load_seconds", "prefill_seconds", "decode_seconds", "prefill_tok_s", "decode_tok_s",
                "bandwidth_bytes_s"):
        assert d[key] > 0, key
    assert d["prefill_tok_s"] == pytest.approx(16 / d["prefill_seconds"])
    assert d["decode_tok_s"] == pytest.approx(3 / d["decode_seconds"])
    assert d["peak_rss_bytes"] > 10 * 1024**2 and d["peak_rss_bytes"] >= d["rss_bytes"] > 0
    # Counted from the loaded tensors; the config's estimate leaves out small float32 tensors.
    estimate = preset("tiny", num_hidden_layers=2).weight_bytes()["read_per_token"]
    assert estimate <= d["weight_bytes_read_per_token"] < 1.05 * estimate
    assert d["bandwidth_bytes_s"] > 100e6
    assert 0 < d["bandwidth_share"] < 10
    (row,) = d["decode"]
    assert row["context"] == 0
    assert row["bytes_per_token"] == d["weight_bytes_read_per_token"] + row["kv_bytes_per_token"]
    assert d["bandwidth_share"] == pytest.approx(row["bytes_per_token"] * d["decode_tok_s"] / d["bandwidth_bytes_s"])
    assert row["bound_tok_s"] == pytest.approx(d["bandwidth_bytes_s"] / row["bytes_per_token"])
    assert row["fraction_of_bound"] == pytest.approx(d["bandwidth_share"])
    table = capsys.readouterr().out
    for label in ("prefill", "decode", "peak RSS", "memory bandwidth", "bandwidth share"):
        assert label in table


def test_bench_threads_and_float32(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    rc = main(["bench", "--model", str(tiny_ckpt), "--prompt-tokens", "4", "--gen-tokens", "2",
               "--dtype", "float32", "--threads", "1", "--seed", "3", "--no-warmup", "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["dtype"] == "float32" and d["threads"] == 1 and d["decode_tokens"] == 1
    bf16_read = preset("tiny", num_hidden_layers=2).weight_bytes()["read_per_token"]
    assert 1.05 * bf16_read < d["weight_bytes_read_per_token"] < 2 * bf16_read  # dense doubles, MXFP4 does not


def test_bench_suites_contexts_and_int8(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    assert main(["bench", "--model", str(tiny_ckpt), "--prompt-tokens", "5,12", "--contexts", "0,20", "--gen-tokens",
                 "3", "--quantize", "int8", "--agreement", "6", "--no-warmup", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert [p["tokens"] for p in d["prefill"]] == [5, 12] and [r["context"] for r in d["decode"]] == [0, 20]
    assert d["decode"][1]["kv_bytes_per_token"] > d["decode"][0]["kv_bytes_per_token"] > 0
    assert d["quantize"] == "int8"
    acc = d["accuracy"]
    assert acc["tokens"] == 6 and 0 <= acc["greedy_agreement"] <= 1 and acc["max_logit_error"] > 0
    plain = tmp_path / "plain.json"
    assert main(["bench", "--model", str(tiny_ckpt), "--prompt-tokens", "5", "--gen-tokens", "2", "--no-warmup",
                 "--json", str(plain)]) == 0
    # int8 attention and unembedding: fewer weight bytes per token than bf16
    assert d["weight_bytes_read_per_token"] < json.loads(plain.read_text())["weight_bytes_read_per_token"]


def test_bench_preset_is_written_once_into_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GPTOSS_CACHE_DIR", str(tmp_path / "cache"))
    args = ["bench", "--preset", "tiny", "--layers", "1", "--prompt-tokens", "4", "--contexts", "0",
            "--gen-tokens", "2", "--no-warmup", "--json", str(tmp_path / "p.json")]
    assert main(args) == 0
    written = tmp_path / "cache" / "bench" / "tiny-L1-seed0"
    assert (written / "original" / "config.json").is_file()
    mtime = (written / "original" / "config.json").stat().st_mtime_ns
    assert main(args) == 0 and (written / "original" / "config.json").stat().st_mtime_ns == mtime  # reused
    assert json.loads((tmp_path / "p.json").read_text())["layers"] == 1
    assert [p.name for p in (tmp_path / "cache" / "bench").iterdir()] == ["tiny-L1-seed0"]  # no partial left


def test_bench_compares_with_transformers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    monkeypatch.setenv("GPTOSS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "hf.json"
    assert main(["bench", "--preset", "tiny", "--layers", "1", "--prompt-tokens", "8", "--contexts", "0",
                 "--gen-tokens", "3", "--compare-transformers", "--json", str(out)]) == 0
    hf = json.loads(out.read_text())["transformers"]
    assert hf["prefill"][0]["tokens"] == 8 and hf["prefill"][0]["tok_s"] > 0 and hf["prefill"][0]["speedup"] > 0
    assert hf["decode"]["steps"] == 2 and hf["decode"]["speedup"] > 0


@pytest.mark.parametrize("extra", [["--preset", "tiny"], ["--layers", "2"], ["--agreement", "-1"]])
def test_bench_rejects_bad_combinations(tiny_ckpt: Path, extra: list[str]) -> None:
    assert main(["bench", "--model", str(tiny_ckpt), *extra]) == 1


def test_bench_rejects_one_gen_token(tiny_ckpt: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(["bench", "--model", str(tiny_ckpt), "--gen-tokens", "1"])
    assert e.value.code == 2


def test_bench_missing_checkpoint_is_an_error(tmp_path: Path) -> None:
    assert main(["bench", "--model", str(tmp_path / "nope")]) == 1


@pytest.mark.parametrize("mode", ["copy", "read"])
def test_measure_memory_bandwidth_is_plausible_and_bounded(mode: str) -> None:
    t0 = time.perf_counter()
    bw = stats.measure_memory_bandwidth(seconds=0.2, nbytes=32 * 1024**2, mode=mode)
    elapsed = time.perf_counter() - t0
    assert 100e6 < bw < 1e13
    assert elapsed < 10


def test_measure_memory_bandwidth_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        stats.measure_memory_bandwidth(seconds=0)
    with pytest.raises(ValueError):
        stats.measure_memory_bandwidth(nbytes=100)
    with pytest.raises(ValueError, match="mode"):
        stats.measure_memory_bandwidth(mode="write")


def test_rss_helpers() -> None:
    rss = stats.current_rss_bytes()
    assert rss > 1024**2
    assert stats.peak_rss_bytes() >= rss * 0.9  # a high-water mark (KiB converted to bytes)


def test_bench_result_to_dict_round_trips() -> None:
    r = stats.BenchResult(model="m", dtype="bfloat16", device="cpu", threads=1, prompt_tokens=2, gen_tokens=3,
                          decode_tokens=2, load_seconds=1.0, prefill_seconds=0.5, prefill_tok_s=4.0,
                          decode_seconds=1.0, decode_tok_s=2.0, peak_rss_bytes=10, rss_bytes=9,
                          weight_bytes_read_per_token=100, bandwidth_bytes_s=1000.0,
                          bandwidth_share=stats.bandwidth_share(100, 2.0, 1000.0))
    d = r.to_dict()
    assert set(d) == FIELDS
    assert d["bandwidth_share"] == pytest.approx(0.2)
    assert stats.BenchResult(**d) == r
    assert stats.bandwidth_share(100, 2.0, 0.0) == 0.0
