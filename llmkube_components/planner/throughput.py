"""Decode throughput estimate: the bytes one token must read from each memory tier, over that tier's bandwidth.

Token generation in llama.cpp is memory-bound: each new token reads every active weight once (for a
Mixture-of-Experts model, only the routed experts its router picks: expert_used_count of expert_count), and
the KV cache of the context so far. Devices run one after another (layer split: GPU 0's layers, then GPU 1's,
with the host's share, such as experts kept in RAM under --cpu-moe, in between), so the times add up:

    seconds per token = sum over devices of (bytes read there / (bandwidth x efficiency)) + fixed overhead

The efficiencies are what fraction of the spec-sheet bandwidth a decode step reaches in practice. They are
calibrated on one measurement, the reference home lab (Qwen3.6-35B-A3B Q4_K_M, routed experts and q8_0 KV in
DDR5 system RAM, attention on 2 x RTX 5060 Ti: about 21.7 tokens/s), and are an estimate: use the figure to
compare placements and hardware, not as a promise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Fraction of peak bandwidth a decode step reaches. GPUs stream weights close to peak; CPU matrix-vector
# products over quantized experts reach far less of DDR bandwidth (dequantization, threads, NUMA), which is
# why expert offload costs as much as it does. Calibrated as the module docstring says.
GPU_EFFICIENCY = 0.75
HOST_EFFICIENCY = 0.31
# Per-token cost that is not bandwidth: kernel launches, sampling, the HTTP server (measured on llama.cpp
# builds of 2025-2026 as a few milliseconds per token on small models).
OVERHEAD_SECONDS = 0.002
# The planner reads the KV cache at half the context: the average over a conversation that fills it.
KV_FILL = 0.5


@dataclass(frozen=True)
class Throughput:
    decode_tokens_per_second: float
    seconds_by_device: Mapping[str, float]  # where the time per token goes

    def bottleneck(self) -> str:
        return max(self.seconds_by_device, key=lambda d: self.seconds_by_device[d])


def decode_estimate(bytes_per_token: Mapping[str, float], gpu_bandwidth: float, host_bandwidth: float) -> Throughput:
    """Tokens per second from the bytes a token reads on each device (``gpu0``.., ``host``) and bandwidths."""
    seconds: dict[str, float] = {}
    for device, nbytes in sorted(bytes_per_token.items()):
        if nbytes <= 0:
            continue
        if device == "host":
            seconds[device] = nbytes / (host_bandwidth * HOST_EFFICIENCY)
        else:
            seconds[device] = nbytes / (gpu_bandwidth * GPU_EFFICIENCY)
    total = sum(seconds.values()) + OVERHEAD_SECONDS
    return Throughput(1.0 / total, seconds)
