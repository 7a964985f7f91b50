"""offload: auto against llama.cpp's own fitter (llama-fit-params), on two devices of this machine (issue 14 b).

The devices are two ggml-rpc-server workers on loopback (testkit/rpc.py): llama.cpp sees two GPU-type devices
(RPC0, RPC1) backed by the CPU. For each usable size U per device:

- llama.cpp: ``llama-fit-params`` on the generated MoE model with the service's context and ``--parallel 1``,
  its target margin per device (``--fit-target``, whole MiB) set so that each device has U usable. A CPU worker
  reports the host's RAM as free and total (``sysconf``, constant), and common/fit.cpp aims at ``free - margin``
  per device, so the margin is ``(RAM - U) // MiB`` MiB and the usable target ``RAM - margin`` is U rounded up
  to what the MiB granularity allows. Its placement is the ``-ngl``, ``-ts`` and ``-ot`` it prints.
- ours: the stack pipeline plans a service with ``offload: auto`` on a hardware profile of 2 GPUs of
  ``target + GPU_RUNTIME_OVERHEAD`` usable bytes each (the planner adds that CUDA runtime allowance to every
  GPU; an RPC worker allocates nothing of the kind, so the profile gives it back) and renders the server's
  arguments as a pod would get them (server_args_for).
- both placements are then run by llama-server on the same workers with ``-lv 4``; a device's measured use is
  its model + KV + compute buffers, what common/fit.cpp compares with its target
  (``llama_memory_breakdown``: model + context + compute).

Prints, per U: both placements (layers per device, tensor split, experts in RAM), per-device planned and
measured MiB, and whether each fits. Asserts nothing; tests/e2e/test_two_devices.py asserts, on a few U, that
our choice fits wherever llama.cpp's fitter finds a placement, and that both use both devices.
Run from the repository root: .venv/bin/python -m benchmarks.fit_compare [--usable-mib 24 ...]
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmkube_components.errors import ConfigError
from llmkube_components.pipeline import load
from llmkube_components.planner.memory import GPU_RUNTIME_OVERHEAD, HOST, MemoryPlan, gpu_name, plan_memory
from llmkube_components.planner.plan import ServicePlan, settings_from_args
from llmkube_components.settings import Settings
from llmkube_components.workloads.objects import server_args_for
from testkit import gguf_files
from testkit.accuracy import facts_of
from testkit.llama_server import LlamaServer, find_tool, free_port, localize
from testkit.rpc import RpcWorkers, device_figures, host_memory_bytes

MiB = 1024 * 1024
DEVICES = 2
CONTEXT = 4096
# qwen3moe, F16: each layer's routed experts are 6 MiB (32 x 3 x 128 x 256 x 2 B), its dense part 0.3 MiB;
# 8 layers, 4096 cells of f16 K and V (1 MiB per layer). Sizes where the experts decide what fits.
MODEL_DIMS = {
    "n_layer": 8, "n_embd": 256, "n_head": 4, "n_head_kv": 2, "head_dim": 64, "n_expert": 32, "n_ff_exp": 128,
    "n_ctx_train": 32768,
}  # fmt: skip
# Usable MiB per device: everything fits (96); just not everything (56, 50: the fitter spills part of one layer at
# 56; at 50 it returns every layer whole, having checked only the device it filled last, and pipeline parallelism
# then makes gpu0 overflow); experts spill to RAM (40, 24); little more than the dense part fits (16, 12).
USABLE_MIB = (96, 56, 50, 40, 24, 16, 12)
# What each server run adds to the placement: the accounting lines, no repacking of host weights into the
# CPU's extra buffer types (an RPC device has no host buffer type to take precedence over them, see testkit/rpc.py),
# and no --fit dry run (either placement sets -ngl, so --fit would only log that it stops).
MEASURE_ARGS = ("--fit", "off", "--no-repack", "-lv", "4")
# blk.5.ffn_down_exps.weight: a layer's routed experts (one tensor per projection).
EXPERT_TENSOR = re.compile(r"^blk\.(\d+)\.ffn_(\w+)_exps\.weight$")
# -ot blk\.5\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU: the fitter's rule for a whole layer's routed experts.
EXPERT_RULE = re.compile(r"^blk\\\.(\d+)\\\.ffn_\(up\|down\|gate_up\|gate\)_\(ch\|\)exps$")


def write_model(folder: Path) -> Path:
    return gguf_files.write_moe(folder / "fit-moe.gguf", weight_type="F16", **MODEL_DIMS)


def margin_mib(usable: int) -> int:
    """--fit-target for a device that should have ``usable`` bytes: the MiB that leaves at least that much."""
    return (host_memory_bytes() - usable) // MiB


def target_bytes(usable: int) -> int:
    """What common/fit.cpp allows on a CPU worker with that margin: free (the host's RAM) minus the margin."""
    return host_memory_bytes() - margin_mib(usable) * MiB


# --- llama.cpp's fitter -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fitted:
    """llama-fit-params' answer: the arguments it prints (None when it found no placement) and its log."""

    args: tuple[str, ...] | None
    log: str


def fit_params(binary: Path, model: Path, workers: RpcWorkers, usable: int, log_path: Path) -> Fitted:
    margin = margin_mib(usable)
    cmd = [
        str(binary), "--model", str(model), *workers.device_args(), "--ctx-size", str(CONTEXT), "--parallel", "1",
        "--fit-target", ",".join([str(margin)] * DEVICES), "-lv", "4",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    log_path.write_text(done.stderr)
    if done.returncode != 0:
        return Fitted(None, done.stderr)
    return Fitted(tuple(shlex.split(done.stdout.strip().splitlines()[-1])), done.stderr)


def as_cuda(args: Sequence[str], workers: RpcWorkers) -> list[str]:
    """Fitter arguments with a worker's buffer type (``RPC0[127.0.0.1:p]``) named as the planner names a GPU's."""
    out = []
    for arg in args:
        for i, endpoint in enumerate(workers.endpoints):
            arg = re.sub(rf"RPC\d+\[{re.escape(endpoint)}\]", f"CUDA{i}", arg)
        out.append(arg)
    return out


def planned_for_args(model: Path, args: Sequence[str], workers: RpcWorkers) -> MemoryPlan:
    """Our planner's figures for a placement given as llama.cpp arguments (the fitter's)."""
    settings = settings_from_args(as_cuda(args, workers), DEVICES)
    return plan_memory(
        facts_of(model), settings.placement, context_size=CONTEXT, parallel=1, cache_ram_mib=0, repack=False
    )


# --- ours -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ours:
    """offload: auto's choice (None when nothing fits) and the server arguments it renders."""

    plan: ServicePlan | None
    args: tuple[str, ...]
    error: str = ""


def stack_config(model: Path, usable: int) -> dict[str, object]:
    gpu_bytes = usable + GPU_RUNTIME_OVERHEAD
    profile = {"extends": "dual-rtx5060ti", "gpu": {"memory": str(gpu_bytes + 1)}, "reserved": {"gpuMemory": "1"}}
    return {
        "hardware": profile, "allowHostPath": True, "models": {"m": {"source": str(model)}},
        "services": {"s": {"modelRef": "m", "contextSize": CONTEXT, "parallelSlots": 1}},
    }  # fmt: skip


def our_choice(model: Path, usable: int, cache_dir: Path) -> Ours:
    settings = Settings(offline=True, node_check=False, cache_dir=cache_dir)
    try:
        planned = load(stack_config(model, usable), settings)
    except ConfigError as exc:
        return Ours(None, (), str(exc))
    (service,) = planned.stack.services.values()
    return Ours(planned.plans[service.name], tuple(server_args_for(service)))


# --- measuring ----------------------------------------------------------------------------------------------------


def measure(
    server: Path, model: Path, args: Sequence[str], workers: RpcWorkers, log_path: Path
) -> dict[str, dict[str, float]]:
    """MiB per device and quantity when llama-server runs ``args`` (a whole command line or just placement flags)."""
    port = free_port()
    if "--model" in args:
        full = localize(args, model, port)
    else:
        full = ["--model", str(model), "--host", "127.0.0.1", "--port", str(port), *args]
    with LlamaServer(server, [*workers.device_args(), *full, *MEASURE_ARGS], log_path) as srv:
        pass
    return device_figures(srv.log(), workers.endpoints)


def used(figures: dict[str, dict[str, float]], device: str) -> float:
    """A device's model + KV + compute buffers, MiB (what common/fit.cpp holds against its target)."""
    return sum(figures[device].values())


def placement_text(memory: MemoryPlan) -> str:
    """Blocks per device, and the routed experts that are not on their block's device (whole layers in RAM, parts
    of a layer elsewhere), from a plan's tensor placement."""
    per_device = []
    for device in (*(g.name for g in memory.gpus), HOST):
        blocks = _ranges([i for i, d in enumerate(memory.layer_devices[:-1]) if d == device])
        held = [f"blocks {blocks}"] if blocks else []
        held += ["output"] if memory.layer_devices[-1] == device else []
        if held or device != HOST:
            per_device.append(f"{device}: {' + '.join(held) or 'nothing'}")
    moved: dict[int, dict[str, list[str]]] = {}
    count: dict[int, int] = {}
    for name, device in memory.tensor_devices.items():
        m = EXPERT_TENSOR.match(name)
        if m is None:
            continue
        il = int(m[1])
        count[il] = count.get(il, 0) + 1
        if device != memory.layer_devices[il]:
            moved.setdefault(il, {}).setdefault(device, []).append(m[2])
    whole = [il for il, where in sorted(moved.items()) if len(where.get(HOST, ())) == count[il]]
    parts = [
        f"{il} {'+'.join(sorted(kinds))} on {device}"
        for il, where in sorted(moved.items())
        if il not in whole
        for device, kinds in where.items()
    ]
    experts = f"offloaded blocks' experts in RAM: {_ranges(whole) or 'none'}"
    experts += f"; parts elsewhere: {', '.join(parts)}" if parts else ""
    return "; ".join(per_device) + "; " + experts


def _ranges(ns: Sequence[int]) -> str:
    """1,2,3,5 -> 1-3,5"""
    runs: list[list[int]] = []
    for n in ns:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def experts_on_devices(memory: MemoryPlan) -> dict[str, int]:
    """Layers whose routed experts (any of them) each GPU holds."""
    out: dict[str, set[int]] = {g.name: set() for g in memory.gpus}
    for name, device in memory.tensor_devices.items():
        m = EXPERT_TENSOR.match(name)
        if m is not None and device in out:
            out[device].add(int(m[1]))
    return {name: len(layers) for name, layers in out.items()}


# --- the comparison -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    usable: int  # bytes asked per device
    target: int  # bytes common/fit.cpp allows per device (usable rounded up by the MiB margin)
    fitted: Fitted
    theirs_plan: MemoryPlan | None  # our planner on llama.cpp's placement
    theirs_measured: dict[str, dict[str, float]] | None
    ours: Ours
    ours_measured: dict[str, dict[str, float]] | None

    def fits_measured(self, figures: dict[str, dict[str, float]] | None) -> bool:
        # llama.cpp prints two decimals: a device within 0.005 MiB of the target is not known to be over it.
        return figures is not None and all(
            used(figures, gpu_name(i)) <= self.target / MiB + 0.005 for i in range(DEVICES)
        )


def compare(server: Path, fitter: Path, model: Path, workers: RpcWorkers, usable: int, folder: Path) -> Comparison:
    tag = f"u{usable // MiB}"
    fitted = fit_params(fitter, model, workers, usable, folder / f"{tag}-fit-params.log")
    theirs_plan = theirs = None
    if fitted.args is not None:
        theirs_plan = planned_for_args(model, fitted.args, workers)
        # The fitter planned one sequence (its default --parallel 1); llama-server's default is 4.
        theirs_args = [*fitted.args, "--parallel", "1"]
        theirs = measure(server, model, theirs_args, workers, folder / f"{tag}-theirs.log")
    ours = our_choice(model, target_bytes(usable), folder / "cache")
    ours_measured = measure(server, model, ours.args, workers, folder / f"{tag}-ours.log") if ours.plan else None
    return Comparison(usable, target_bytes(usable), fitted, theirs_plan, theirs, ours, ours_measured)


def format_comparison(c: Comparison) -> str:
    lines = [f"U = {c.usable / MiB:.0f} MiB per device (fit target {c.target / MiB:.3f} MiB)"]
    if c.fitted.args is None:
        lines.append("  llama-fit-params: no placement fits")
    else:
        assert c.theirs_plan is not None and c.theirs_measured is not None
        lines.append(f"  llama-fit-params: {' '.join(_short(c.fitted.args))}")
        lines.append(f"    {placement_text(c.theirs_plan)}")
        lines += _devices(c, c.theirs_plan, c.theirs_measured)
    if c.ours.plan is None:
        lines.append(f"  ours: nothing fits ({c.ours.error.splitlines()[0] if c.ours.error else ''})")
    else:
        assert c.ours_measured is not None
        memory = c.ours.plan.chosen.memory
        lines.append(f"  ours: {c.ours.plan.chosen.label}")
        lines.append(f"    {placement_text(memory)}")
        lines += _devices(c, memory, c.ours_measured)
    return "\n".join(lines)


def _devices(c: Comparison, memory: MemoryPlan, measured: dict[str, dict[str, float]]) -> list[str]:
    out = []
    experts = experts_on_devices(memory)
    for gpu in memory.gpus:
        planned = (gpu.total - gpu["runtime"]) / MiB
        got = used(measured, gpu.name)
        mark = "fits" if got <= c.target / MiB + 0.005 else "OVER"
        m = measured[gpu.name]
        out.append(
            f"    {gpu.name}: planned {planned:7.2f} MiB (as for a CUDA GPU, less the runtime allowance), "
            f"measured {got:7.2f} MiB "
            f"(weights {m['weights']:.2f} + KV {m['KV']:.2f} + compute {m['compute']:.2f}) {mark}; "
            f"experts of {experts[gpu.name]} layers"
        )
    return out


def _short(args: Sequence[str]) -> list[str]:
    """The fitter's arguments with its -ot list shortened: one rule per buffer for whole layers' experts."""
    out = list(args)
    if "-ot" in out:
        i = out.index("-ot")
        whole: dict[str, list[int]] = {}
        other: list[str] = []
        for rule in out[i + 1].split(","):
            pattern, _, buffer = rule.rpartition("=")
            if m := EXPERT_RULE.match(pattern):
                whole.setdefault(buffer, []).append(int(m[1]))
            else:
                other.append(rule)
        shown = [f"blk.{_ranges(layers)}.*exps={buffer}" for buffer, layers in whole.items()]
        out[i + 1] = ",".join([*shown, *other])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--usable-mib", type=int, action="append", help=f"usable MiB per device (default {USABLE_MIB})")
    parser.add_argument("--logs", type=Path, help="keep the model and every log in this folder")
    ns = parser.parse_args()
    tools = {name: find_tool(name) for name in ("llama-server", "llama-fit-params", "ggml-rpc-server")}
    missing = [name for name, path in tools.items() if path is None or not path.is_file()]
    if missing:
        sys.exit(f"{', '.join(missing)} not found: run tools/setup-llama-server")
    server, fitter, rpc = (tools[n] for n in ("llama-server", "llama-fit-params", "ggml-rpc-server"))
    assert server is not None and fitter is not None and rpc is not None
    with tempfile.TemporaryDirectory(prefix="fit-compare-") as tmp:
        folder = ns.logs or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = write_model(folder)
        with RpcWorkers(rpc, DEVICES, folder) as workers:
            for mib in ns.usable_mib or USABLE_MIB:
                print(format_comparison(compare(server, fitter, model, workers, mib * MiB, folder)))
                print()


if __name__ == "__main__":
    main()
