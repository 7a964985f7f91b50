"""The speed model: decode at a depth, prefill with op offload, concurrency, graph splits (planner/throughput.py)."""

from __future__ import annotations

import json

import pytest

from llmkube_components import cli
from llmkube_components.planner.throughput import (
    GPU_MEMORY_EFFICIENCY,
    HOST_MEMORY_EFFICIENCY,
    LINK_EFFICIENCY,
    SPLIT_SECONDS,
    STEP_SECONDS,
    DeviceWork,
    Machine,
    Workload,
    decode_step,
    prefill,
    speed,
)

MACHINE = Machine(
    gpu_count=1,
    gpu_bandwidth=1000e9,
    gpu_flops=100e12,
    link_bandwidth=30e9,
    host_bandwidth=100e9,
    host_flops=2e12,
)


def load(
    devices: dict[str, DeviceWork], *, used: int = 0, count: int = 0, window: int = 0, splits: int = 0
) -> Workload:
    return Workload(devices, used, count, window, splits, 0)


def test_a_decode_step_is_the_bytes_read_over_the_bandwidth_plus_fixed_costs() -> None:
    work = load({"gpu0": DeviceWork(dense_bytes=1e9, dense_elements=1e9)}, splits=3)
    step = decode_step(work, MACHINE)
    expected = 1e9 / (1000e9 * GPU_MEMORY_EFFICIENCY) + 3 * SPLIT_SECONDS + STEP_SECONDS
    assert step.seconds == pytest.approx(expected)


def test_decode_slows_with_depth_by_the_kv_rows_read_and_a_window_caps_them() -> None:
    kv = DeviceWork(dense_bytes=1e9, dense_elements=1e9, kv_bytes_per_token=100e3)
    deep = decode_step(load({"gpu0": kv}), MACHINE, depth=10_000).seconds
    shallow = decode_step(load({"gpu0": kv}), MACHINE, depth=0).seconds
    assert deep - shallow == pytest.approx(10_000 * 100e3 / (1000e9 * GPU_MEMORY_EFFICIENCY))
    swa = DeviceWork(dense_bytes=1e9, dense_elements=1e9, swa_kv_bytes_per_token=100e3)
    capped = decode_step(load({"gpu0": swa}, window=128), MACHINE, depth=10_000).seconds
    assert capped == pytest.approx(decode_step(load({"gpu0": swa}, window=128), MACHINE, depth=128).seconds)


def test_a_kv_cache_in_ram_costs_at_depth_what_it_costs_at_host_bandwidth() -> None:
    weights = DeviceWork(dense_bytes=1e9, dense_elements=1e9)
    on_host = load({"gpu0": weights, "host": DeviceWork(kv_bytes_per_token=100e3)})
    cost = decode_step(on_host, MACHINE, depth=50_000).seconds - decode_step(on_host, MACHINE, depth=0).seconds
    assert cost == pytest.approx(50_000 * 100e3 / (100e9 * HOST_MEMORY_EFFICIENCY))


def test_concurrent_requests_share_the_weights_and_pay_their_own_kv() -> None:
    work = load({"gpu0": DeviceWork(dense_bytes=4e9, dense_elements=4e9, kv_bytes_per_token=50e3)})
    one = decode_step(work, MACHINE, sequences=1, depth=4096).seconds
    four = decode_step(work, MACHINE, sequences=4, depth=4096).seconds
    assert one < four < 4 * one  # aggregate rises, each request slows
    assert four - one == pytest.approx(3 * 4096 * 50e3 / (1000e9 * GPU_MEMORY_EFFICIENCY))


def test_more_tokens_read_more_of_the_routed_experts() -> None:
    work = load({"gpu0": DeviceWork(expert_bytes=8e9, expert_elements=8e9)}, used=8, count=128)
    assert work.expert_fraction(1) == pytest.approx(8 / 128)
    assert work.expert_fraction(4) == pytest.approx(1 - (120 / 128) ** 4)
    assert work.expert_fraction(512) == pytest.approx(1.0)
    assert decode_step(work, MACHINE, sequences=4).seconds > decode_step(work, MACHINE, sequences=1).seconds


def test_prefill_is_compute_bound_and_host_weights_cross_the_link_once_per_ubatch() -> None:
    gpu_only = load({"gpu0": DeviceWork(dense_bytes=1e9, dense_elements=2e9)})
    hybrid = load(
        {
            "gpu0": DeviceWork(dense_bytes=1e9, dense_elements=2e9),
            "host": DeviceWork(expert_bytes=8e9, expert_elements=16e9),
        },
        used=8,
        count=128,
    )
    full = prefill(gpu_only, MACHINE, prompt=2048, ubatch=512)
    mixed = prefill(hybrid, MACHINE, prompt=2048, ubatch=512)
    assert "link" not in full.by_part
    # Four ubatches of 512 tokens each use every expert, and copy them all to the GPU.
    assert mixed.by_part["link"] == pytest.approx(4 * 8e9 * hybrid.expert_fraction(512) / (30e9 * LINK_EFFICIENCY))
    assert "host" not in mixed.by_part  # the host's matrix products ran on the GPU
    assert mixed.seconds > 3 * full.seconds


def test_small_ubatches_stay_on_the_cpu() -> None:
    hybrid = load({"gpu0": DeviceWork(dense_bytes=1e9), "host": DeviceWork(dense_bytes=1e9, dense_elements=1e9)})
    step = prefill(hybrid, MACHINE, prompt=16, ubatch=16)
    assert "link" not in step.by_part and step.by_part["host"] > 0


def test_speed_reports_the_asked_depth_one_k_the_full_context_and_concurrency() -> None:
    work = load({"gpu0": DeviceWork(dense_bytes=2e9, dense_elements=2e9, kv_bytes_per_token=100e3)})
    figures = speed(work, MACHINE, depth=0, prompt=512, context=32768, ubatch=512, sequences=4)
    assert list(figures.decode_by_depth) == [1024, 32768]
    assert figures.decode_tokens_per_second > figures.decode_by_depth[1024] > figures.decode_by_depth[32768]
    assert figures.aggregate_decode_tokens_per_second > figures.decode_tokens_per_second
    assert figures.per_request_decode_tokens_per_second <= figures.decode_tokens_per_second
    assert figures.time_to_first_token == pytest.approx(
        512 / figures.prefill_tokens_per_second + 1 / figures.decode_tokens_per_second
    )
    out = figures.output()
    assert out["decodeTokensPerSecondByDepth"] == {
        "1024": pytest.approx(figures.decode_by_depth[1024], abs=0.06),
        "32768": pytest.approx(figures.decode_by_depth[32768], abs=0.06),
    }


def _plan_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    code = cli.main(
        [
            "plan",
            "--model",
            "Qwen3-Coder-30B-A3B",
            "--quantization",
            "Q4_K_M",
            "--profile",
            "dual-rtx5060ti",
            "--context",
            "90112",
            "--cache-type-k",
            "q8_0",
            "--cache-type-v",
            "q8_0",
            "--cpu-moe",
            "--no-kv-offload",
            "--json",
            *extra,
        ]
    )
    assert code == 0
    plan: dict[str, object] = json.loads(capsys.readouterr().out)["plan"]
    return plan


def test_plan_depth_gives_decode_at_that_depth_and_prompt_the_time_to_first_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # All 48 layers keep their KV cache in RAM here: the figure at 80K must be far below the one at 0.
    shallow = _plan_json(capsys)
    deep = _plan_json(capsys, "--depth", "81920", "--prompt", "8192")
    assert shallow["depth"] == 0 and deep["depth"] == 81920
    assert float(deep["decodeTokensPerSecond"]) < 0.6 * float(shallow["decodeTokensPerSecond"])  # type: ignore[arg-type]
    assert shallow["decodeTokensPerSecondByDepth"] == deep["decodeTokensPerSecondByDepth"]
    assert float(deep["timeToFirstTokenSeconds"]) > 10 * float(shallow["timeToFirstTokenSeconds"])  # type: ignore[arg-type]
    concurrency = shallow["concurrency"]
    assert isinstance(concurrency, dict) and concurrency["requests"] == 4


def test_plan_refuses_a_negative_depth(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["plan", "--model", "Qwen3-30B-A3B", "--depth", "-1"])
    assert "-1 is negative" in capsys.readouterr().err
