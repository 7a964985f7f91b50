"""The throughput harness's parsing and arithmetic (testkit/throughput.py), without the llama.cpp tools."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from testkit import throughput
from testkit.throughput import (
    CpuSample,
    Measurement,
    Round,
    bench_args,
    format_table,
    others_cpu,
    parse_bench_json,
    physical_cores,
    quietest,
    server_measurement,
)

# Two tests of `llama-bench -o json` from this build (0c1e570), fields the parser does not read left out.
BENCH_JSON = """[
  {
    "build_commit": "0c1e570", "build_number": 1, "cpu_info": "Intel(R) Xeon(R) Processor", "backends": "CPU",
    "model_type": "qwen3 ?B all F32", "model_size": 381790208, "model_n_params": 190867968,
    "n_batch": 256, "n_ubatch": 64, "n_threads": 2, "type_k": "f16", "type_v": "f16", "flash_attn": 1,
    "repack": true, "n_prompt": 256, "n_gen": 0, "n_depth": 0,
    "avg_ns": 944615921, "stddev_ns": 323462844, "avg_ts": 287.888042, "stddev_ts": 98.580896,
    "samples_ns": [ 715893153, 1173338690 ], "samples_ts": [ 357.595, 218.181 ]
  },
  {
    "build_commit": "0c1e570", "build_number": 1, "cpu_info": "Intel(R) Xeon(R) Processor", "backends": "CPU",
    "model_type": "qwen3 ?B all F32", "model_size": 381790208, "model_n_params": 190867968,
    "n_batch": 2048, "n_ubatch": 512, "n_threads": 2, "type_k": "q8_0", "type_v": "q8_0", "flash_attn": 0,
    "repack": false, "n_prompt": 0, "n_gen": 32, "n_depth": 4096,
    "avg_ns": 1081000000, "stddev_ns": 20000000, "avg_ts": 29.61, "stddev_ts": 0.55,
    "samples_ns": [ 1061000000, 1101000000 ], "samples_ts": [ 30.16, 29.06 ]
  }
]"""


def test_parse_bench_json_prompt_and_decode_rows() -> None:
    pp, tg = parse_bench_json(BENCH_JSON, "dense")
    assert pp == Measurement(
        model="dense", kind="pp", n_prompt=256, n_gen=0, depth=0, batch=256, ubatch=64, parallel=1, threads=2,
        tokens_per_second=287.888042, stddev=98.580896, flash_attn=True, type_k="f16", type_v="f16", repack=True,
    )  # fmt: skip
    assert (tg.kind, tg.n_gen, tg.depth, tg.batch, tg.ubatch) == ("tg", 32, 4096, 2048, 512)
    assert (tg.tokens_per_second, tg.stddev) == (29.61, 0.55)
    assert (tg.flash_attn, tg.type_k, tg.type_v, tg.repack) == (False, "q8_0", "q8_0", False)
    assert tg.ms_per_token == pytest.approx(1000 / 29.61)


def test_parse_bench_json_empty_run() -> None:
    assert parse_bench_json("[\n]\n", "dense") == []


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_bench_args_prompt_tests() -> None:
    args = bench_args(Path("m.gguf"), threads=2, prompts=(64, 256), ubatches=(64, 256), batch=256)
    assert (flag(args, "-p"), flag(args, "-n"), flag(args, "-d")) == ("64,256", "0", "0")
    assert (flag(args, "-b"), flag(args, "-ub")) == ("256", "64,256")
    assert (flag(args, "-t"), flag(args, "-o"), flag(args, "-fa"), flag(args, "--repack")) == ("2", "json", "on", "1")
    assert (flag(args, "-ctk"), flag(args, "-ctv")) == ("f16", "f16")


def test_bench_args_decode_tests() -> None:
    args = bench_args(Path("m.gguf"), threads=1, gen=32, depths=(0, 1024), flash_attn=False, repack=False)
    assert (flag(args, "-p"), flag(args, "-n"), flag(args, "-d")) == ("0", "32", "0,1024")
    assert (flag(args, "-fa"), flag(args, "--repack")) == ("off", "0")
    assert "-b" not in args and "-ub" not in args  # llama-bench's defaults for the depth fill


def timings(predicted_per_second: float, prompt_per_second: float = 100.0, predicted_n: int = 64) -> dict:
    """The ``timings`` object of a llama-server /completion answer (tools/server), as this build sends it."""
    return {
        "cache_n": 0, "prompt_n": 160, "prompt_ms": 1600.0, "prompt_per_token_ms": 10.0,
        "prompt_per_second": prompt_per_second, "predicted_n": predicted_n,
        "predicted_ms": predicted_n * 1000 / predicted_per_second,
        "predicted_per_token_ms": 1000 / predicted_per_second, "predicted_per_second": predicted_per_second,
    }  # fmt: skip


def test_server_measurement_sums_concurrent_requests() -> None:
    rounds = [
        Round((timings(20.0), timings(22.0)), wall_seconds=4.0),
        Round((timings(21.0, 120.0), timings(23.0, 80.0)), wall_seconds=4.0),
    ]
    row = server_measurement("moe", rounds, parallel=2, threads=2, n_predict=64, context=2048)
    assert (row.kind, row.parallel, row.n_prompt, row.n_gen, row.batch) == ("server", 2, 160, 64, 2048)
    assert row.tokens_per_second == pytest.approx(43.0)  # rounds of 42 and 44
    assert row.stddev == pytest.approx(2**0.5)
    assert row.prompt_tokens_per_second == pytest.approx(200.0)
    assert row.wall_tokens_per_second == pytest.approx(128 / 4.0)


def test_server_measurement_one_round_has_no_spread() -> None:
    row = server_measurement("dense", [Round((timings(30.0),), 2.5)], parallel=1, threads=2, n_predict=64,
                             context=1024)  # fmt: skip
    assert (row.tokens_per_second, row.stddev) == (30.0, 0.0)


@pytest.mark.parametrize(
    ("rounds", "message"),
    [
        ([Round((timings(20.0),), 4.0)], "a round has 1 answers, expected 2"),
        ([Round((timings(20.0), timings(20.0, predicted_n=63)), 4.0)], "predicted \\[63, 64\\] tokens"),
    ],
)
def test_server_measurement_rejects_incomplete_rounds(rounds: list[Round], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        server_measurement("dense", rounds, parallel=2, threads=2, n_predict=64, context=2048)


def test_server_timings_parse_from_an_answer() -> None:
    answer = json.loads(
        '{"content": "x", "tokens_predicted": 64, "stop_type": "limit", "timings": {"cache_n": 0, "prompt_n": 160, '
        '"prompt_ms": 1990.898, "prompt_per_token_ms": 12.44, "prompt_per_second": 80.365, "predicted_n": 64, '
        '"predicted_ms": 2000.0, "predicted_per_token_ms": 31.25, "predicted_per_second": 32.0}}'
    )
    row = server_measurement("dense", [Round((answer["timings"],), 2.5)], parallel=1, threads=2, n_predict=64,
                             context=1024)  # fmt: skip
    assert (row.tokens_per_second, row.prompt_tokens_per_second, row.n_prompt) == (32.0, 80.365, 160)


def test_others_cpu_subtracts_our_own_time() -> None:
    before = CpuSample(busy=100.0, ours=10.0, wall=0.0)
    assert others_cpu(before, CpuSample(busy=104.0, ours=13.0, wall=2.0)) == pytest.approx(0.5)
    assert others_cpu(before, CpuSample(busy=102.0, ours=13.0, wall=2.0)) == 0.0  # clock-tick rounding
    assert others_cpu(before, before) == 0.0


@pytest.mark.parametrize(
    ("others", "runs", "kept"),
    [
        ((0.05, 0.0, 0.0), 1, (0, 0.05)),  # quiet enough at once
        ((0.9, 0.3, 0.02), 3, (2, 0.02)),  # retried until quiet
        ((0.9, 0.3, 0.5), 3, (1, 0.3)),  # never quiet: the least disturbed run
    ],
)
def test_quietest_retries_disturbed_runs(
    monkeypatch: pytest.MonkeyPatch, others: tuple[float, ...], runs: int, kept: tuple[int, float]
) -> None:
    # Each run takes 1 s of wall time, none of it ours: busy time is what the others used.
    samples = iter(s for o in others for s in (CpuSample(0.0, 0.0, 0.0), CpuSample(o, 0.0, 1.0)))
    monkeypatch.setattr(throughput, "wait_quiet", lambda: 0.0)
    monkeypatch.setattr(throughput, "cpu_sample", lambda pids=(): next(samples))
    calls: list[int] = []

    def measure() -> int:
        calls.append(len(calls))
        return calls[-1]

    assert quietest(measure, attempts=3) == pytest.approx(kept)
    assert len(calls) == runs


def test_format_table_has_a_line_per_row() -> None:
    (pp, tg) = parse_bench_json(BENCH_JSON, "dense")
    lines = format_table([pp, tg]).splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:3] == ["model", "kind", "n_prompt"]
    assert "287.89" in lines[1] and "33.77" in lines[2]  # tokens/s, ms per token


def test_physical_cores_is_at_most_the_cpus() -> None:
    assert 1 <= physical_cores() <= len(os.sched_getaffinity(0))


def test_a_machine_is_like_the_calibration_one_by_model_cores_and_kind_features() -> None:
    data = json.loads(throughput.CALIBRATED_MACHINE.read_text())["machine"]
    base = throughput.MachineFacts(
        cpu_cores=data["cpuCores"],
        logical_cpus=data["cpuCores"],
        host_memory_bandwidth=1e10,
        copy_bandwidth=1e10,
        bandwidth_array_bytes=1 << 20,
        load_average=(0.0, 0.0, 0.0),
        others_cpu=0.0,
        cpu_model=data["cpuModel"],
        cpu_features=tuple(data["cpuFeatures"]),
    )
    assert throughput.like_calibrated(base)
    # One model name covers Xeons of several generations: one with AMX ran the rows 22-42% faster.
    assert not throughput.like_calibrated(replace(base, cpu_features=("amx_tile",)))
    assert not throughput.like_calibrated(replace(base, cpu_cores=base.cpu_cores + 2))
    assert not throughput.like_calibrated(replace(base, cpu_model="AMD EPYC 9R14"))
