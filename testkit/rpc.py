"""Two devices on one machine: llama.cpp's RPC workers on loopback, what llama.cpp logs per device, and the
planner's figures for the same placement (issue 14 a).

    with RpcWorkers(require_tool("ggml-rpc-server"), 2, folder) as workers:
        got = run_case(server, workers, models[case.shape], case, folder / "server.log")   # MiB per device
        want = expected(facts_of(models[case.shape]), case)                                # the planner's

The workers
- Each is ``ggml-rpc-server -H 127.0.0.1 -p PORT`` (tools/rpc/rpc-server.cpp). The tree has no option for a
  memory size: a CPU worker reports the host's RAM (``sysconf(_SC_PHYS_PAGES)``) as its total and free memory.
- llama-server's ``--rpc`` registers one device per worker, named ``RPC<i>`` in the order given and of type GPU
  (``ggml_backend_rpc_device_get_type``), so llama.cpp offloads layers to the workers only and the local CPU keeps
  what stays on the host (token_embd, layers below ``--n-gpu-layers``, overridden tensors). ``--device RPC0,RPC1``
  says so explicitly (after ``--rpc``, which registers the devices the list names). Worker ``i`` is the
  planner's ``gpu<i>``.

The log (-lv 4; timestamps left out). A worker's buffers are named by the worker's own device index and its
endpoint, so both workers' read ``RPC0[...]``; ``device_figures`` maps the endpoint back to the device:

    load_tensors: RPC0[127.0.0.1:50152] model buffer size =     6.26 MiB
    load_tensors: RPC0[127.0.0.1:50153] model buffer size =     4.76 MiB
    llama_kv_cache: RPC0[127.0.0.1:50152] KV buffer size =    10.00 MiB
    llama_kv_cache: size =   16.00 MiB (  2048 cells,   8 layers,  4/1 seqs), K (f16):    8.00 MiB, V (f16): ...
    sched_reserve: RPC0[127.0.0.1:50153] compute buffer size =    14.04 MiB
    sched_reserve:        CPU compute buffer size =    10.55 MiB

(the model and compute lines are testkit/accuracy.py's regexes; K and V come per buffer only as their sum.)

What is comparable. A worker runs ggml's CPU backend behind a GPU-type device, so of the planner's GPU terms
(llmkube_components/planner/memory.py, which plans CUDA-like GPUs) these do not apply to it:
- ``runtime``: GPU_RUNTIME_OVERHEAD per GPU (ggml-cuda's pool, CUDA graphs) and, on the host,
  HOST_GPU_RUNTIME_OVERHEAD (the CUDA libraries). Not buffers llama.cpp logs; not compared.
- op offload: with ``n_ubatch >= 32`` ggml-cuda runs the products of host-resident weights on the first GPU and
  the plan adds the largest such layer's weights to gpu0's compute. An RPC device has no ``offload_op``: the
  CPU runs those products itself. ``expected`` takes the copy out of gpu0's compute (``op_offload_bytes``), and
  does not compare the host's compute buffer when the host runs part of an offloaded layer (``--n-cpu-moe``):
  it then holds those products' working set, which the plan puts on the GPU.
- flash attention's f16 copy of a quantized K/V cache (ggml-cuda): the cases use f16 caches, so the term is 0.
- repacking: with GPUs the plan repacks nothing (CUDA's host buffer type comes first); an RPC device has no host
  buffer type, so the CPU's extra buffer types (AMX, CPU_REPACK) would take host weights. ``--no-repack``.
- the host's weights: with mmap llama.cpp logs the mapped file range from the first to the last host tensor
  (with ``--n-cpu-moe 2`` also the layers in between that went to the workers), so ``--load-mode none``.

Compared, per device: weights (the model buffers against the plan's weight categories), KV (the KV buffers
against kv_k + kv_v), compute (the compute buffers against the plan's compute, less the op-offload copy).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkube_components.planner.facts import ModelFacts
from llmkube_components.planner.memory import (
    COMPUTE,
    HOST,
    KV_K,
    KV_V,
    OP_OFFLOAD_MIN_BATCH,
    MemoryPlan,
    Placement,
    gpu_name,
    plan_memory,
)
from testkit import gguf_files
from testkit.accuracy import COMPUTE_BUFFER, MODEL_BUFFER, TARGETS, WEIGHT_TYPE, last_load
from testkit.accuracy import SHAPES as ACCURACY_SHAPES
from testkit.llama_server import LlamaServer, free_port

MiB = 1024 * 1024
LOOPBACK = "127.0.0.1"
# `llama_kv_cache: RPC0[127.0.0.1:50152] KV buffer size =    10.00 MiB` (K and V together, per buffer)
KV_BUFFER_SIZE = re.compile(r"llama_kv_cache:\s+(\S+) KV buffer size =\s*([\d.]+) MiB")
# `RPC0[127.0.0.1:50152]`: a worker's buffer, by the worker's device index and its endpoint
RPC_BUFFER = re.compile(r"^RPC\d+\[(.+)\]$")
# The host: plain, mapped (mmap) and the CPU's extra buffer types (when repacking is on).
HOST_BUFFERS = frozenset({"CPU", "CPU_Mapped", "CPU_REPACK", "AMX"})
DEVICE_QUANTITIES = ("weights", "KV", "compute")


class RpcWorkerFailed(AssertionError):
    pass


class RpcWorkers:
    """``count`` ggml-rpc-server processes on free loopback ports, each in its own session and killed (with
    everything it started) when the ``with`` block ends, however it ends."""

    def __init__(self, binary: str | os.PathLike[str], count: int, folder: Path, *, timeout: float = 20):
        self.binary = Path(binary)
        self.count = count
        self.folder = folder
        self.timeout = timeout
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def endpoints(self) -> list[str]:
        return [f"{LOOPBACK}:{port}" for port in self.ports]

    def device_args(self) -> list[str]:
        """llama.cpp's arguments that use exactly the workers as its devices, in order (gpu0 = RPC0, ...)."""
        names = ",".join(f"RPC{i}" for i in range(self.count))
        return ["--rpc", ",".join(self.endpoints), "--device", names]

    def __enter__(self) -> RpcWorkers:
        try:
            for i in range(self.count):
                self._start(i)
            for i, port in enumerate(self.ports):
                self._wait(i, port)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_path(self, i: int) -> Path:
        return self.folder / f"rpc-worker-{i}.log"

    def _start(self, i: int) -> None:
        port = free_port()
        with open(self.log_path(i), "wb") as log:
            proc = subprocess.Popen(
                [str(self.binary), "-H", LOOPBACK, "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.ports.append(port)
        self.procs.append(proc)

    def _wait(self, i: int, port: int) -> None:
        """Until the worker accepts a connection (it serves one client at a time and drops one that says nothing)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            proc = self.procs[i]
            if proc.poll() is not None:
                raise RpcWorkerFailed(f"ggml-rpc-server on port {port} exited with {proc.returncode}\n{self.log(i)}")
            try:
                with socket.create_connection((LOOPBACK, port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RpcWorkerFailed(f"ggml-rpc-server on port {port} did not listen within {self.timeout} s\n{self.log(i)}")

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: the worker and nothing else
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def log(self, i: int) -> str:
        path = self.log_path(i)
        return path.read_text(errors="replace") if path.exists() else ""


def host_memory_bytes() -> int:
    """What a CPU worker reports as its device's total and free memory (ggml-cpu.cpp, on Linux)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def buffer_device(buffer: str, endpoints: Sequence[str]) -> str:
    """The planner's device of a buffer llama.cpp names in its log."""
    if buffer in HOST_BUFFERS:
        return HOST
    m = RPC_BUFFER.match(buffer)
    if m is None or m.group(1) not in endpoints:
        raise ValueError(f"buffer {buffer!r} is neither the host's nor a worker's of {list(endpoints)}")
    return gpu_name(list(endpoints).index(m.group(1)))


def device_figures(log: str, endpoints: Sequence[str]) -> dict[str, dict[str, float]]:
    """MiB per device (gpu0.., host) and quantity (weights, KV, compute), as the last load's log reports them.

    A device without any line of a quantity has none of it there (0.0). Compute is the last reservation of
    each buffer (sched_reserve may run more than once)."""
    log = last_load(log)
    names = [gpu_name(i) for i in range(len(endpoints))] + [HOST]
    out = {name: dict.fromkeys(DEVICE_QUANTITIES, 0.0) for name in names}
    for quantity, pattern in (("weights", MODEL_BUFFER), ("KV", KV_BUFFER_SIZE)):
        for buffer, mib in pattern.findall(log):
            out[buffer_device(buffer, endpoints)][quantity] += float(mib)
    compute = {buffer: float(mib) for buffer, mib in COMPUTE_BUFFER.findall(log)}
    for buffer, mib in compute.items():
        out[buffer_device(buffer, endpoints)]["compute"] += mib
    return out


# --- the two-device cases ------------------------------------------------------------------------------------------

DEVICE_COUNT = 2
CONTEXT = 2048
UBATCH = 512  # llama-server's default --ubatch-size
DEVICE_TARGETS = {"weights": TARGETS["weights"], "KV": TARGETS["K"], "compute": TARGETS["compute"]}
DEVICES = (*(gpu_name(i) for i in range(DEVICE_COUNT)), HOST)


@dataclass(frozen=True)
class Shape:
    write: Callable[..., Path]
    dims: dict[str, Any]


# Sized so that each device gets at least two blocks in every case (a device with one block frees the KQ mask
# before its feed-forward peak, which the plan does not model), F16 weights (see testkit/accuracy.py).
def _accuracy_dims(name: str, **changes: Any) -> dict[str, Any]:
    """A shape of the single-device accuracy matrix (testkit/accuracy.py), with more layers or a bigger vocabulary."""
    (shape,) = [s for s in ACCURACY_SHAPES if s.name == name]
    return {**shape.dims, **changes}


SHAPES: Mapping[str, Shape] = {
    "dense": Shape(gguf_files.write_dense, _accuracy_dims("dense-large", n_layer=12)),
    "moe": Shape(gguf_files.write_moe, _accuracy_dims("moe", n_layer=8, vocab=2048)),
}


@dataclass(frozen=True)
class DeviceCase:
    """One placement over the two workers: --n-gpu-layers, --tensor-split and --n-cpu-moe of a shape."""

    name: str
    shape: str
    placement: Placement = field(default_factory=lambda: Placement(gpu_count=DEVICE_COUNT))

    @property
    def id(self) -> str:
        return f"{self.shape}/{self.name}"

    @property
    def pipeline_parallel(self) -> bool:
        """llama.cpp's rule (llama_context constructor): several devices, every layer (the output layer
        included) offloaded, layer split, KV offloaded, no tensor overrides; RPC devices have async and events."""
        p = self.placement
        n_layer = int(SHAPES[self.shape].dims["n_layer"])
        return (p.n_gpu_layers < 0 or p.n_gpu_layers > n_layer) and not (
            p.cpu_moe or p.n_cpu_moe or p.overrides or p.no_kv_offload
        )

    def compared(self, device: str, quantity: str) -> bool:
        """Whether an RPC(CPU) setup allocates this figure as the plan's CUDA-like GPUs would: not the host's compute
        when the routed experts of offloaded layers are in RAM (--cpu-moe, --n-cpu-moe), as the host then runs
        their products itself where ggml-cuda would offload them to the first GPU."""
        p = self.placement
        return not (device == HOST and quantity == "compute" and (p.cpu_moe or p.n_cpu_moe))


def _case(name: str, shape: str, **placement: Any) -> DeviceCase:
    return DeviceCase(name, shape, Placement(gpu_count=DEVICE_COUNT, **placement))


CASES: tuple[DeviceCase, ...] = (
    _case("even", "dense", tensor_split=(1.0, 1.0)),
    _case("ts3,1", "dense", tensor_split=(3.0, 1.0)),
    # --n-gpu-layers 12 of 13: block 0 stays on the CPU, which turns pipeline parallelism off.
    _case("ts3,1/ngl12", "dense", tensor_split=(3.0, 1.0), n_gpu_layers=12),
    _case("ncmoe2/ts2,1", "moe", tensor_split=(2.0, 1.0), n_cpu_moe=2),
    _case("all/even", "moe", tensor_split=(1.0, 1.0)),
    # gpu1 gets the output layer and no block.
    _case("ncmoe2/ts8,1", "moe", tensor_split=(8.0, 1.0), n_cpu_moe=2),
)


def write_models(folder: Path) -> dict[str, Path]:
    return {
        name: s.write(folder / f"two-devices-{name}.gguf", weight_type=WEIGHT_TYPE, **s.dims)
        for name, s in SHAPES.items()
    }


def placement_args(placement: Placement) -> list[str]:
    """The llama-server flags of a placement (the subset the cases use)."""
    args = ["--n-gpu-layers", str(placement.n_gpu_layers), "--split-mode", str(placement.split_mode)]
    if placement.tensor_split:
        args += ["--tensor-split", ",".join(f"{s:g}" for s in placement.tensor_split)]
    if placement.n_cpu_moe:
        args += ["--n-cpu-moe", str(placement.n_cpu_moe)]
    return args


def server_args(workers: RpcWorkers, model: Path, case: DeviceCase, port: int) -> list[str]:
    return [
        *workers.device_args(), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--ctx-size", str(CONTEXT), "--ubatch-size", str(UBATCH), "--flash-attn", "on", "--cache-ram", "0",
        "--fit", "off", "--no-repack", "--load-mode", "none", "-lv", "4", *placement_args(case.placement),
    ]  # fmt: skip


def run_case(
    server: Path, workers: RpcWorkers, model: Path, case: DeviceCase, log_path: Path
) -> dict[str, dict[str, float]]:
    with LlamaServer(server, server_args(workers, model, case, free_port()), log_path) as srv:
        pass
    return device_figures(srv.log(), workers.endpoints)


# --- the planner's side ----------------------------------------------------------------------------------------------


def plan_case(facts: ModelFacts, case: DeviceCase) -> MemoryPlan:
    return plan_memory(
        facts, case.placement, context_size=CONTEXT, ubatch=UBATCH, flash_attn=True, cache_ram_mib=0, repack=False
    )


def op_offload_bytes(facts: ModelFacts, plan: MemoryPlan) -> int:
    """The copy the plan adds to gpu0's compute for ggml-cuda's op offload: the largest block's host-resident
    matrices (2-D and 3-D weights; memory.py, "compute"), when the ubatch reaches the offload batch."""
    if plan.ubatch < OP_OFFLOAD_MIN_BATCH:
        return 0
    by_layer: dict[int, int] = {}
    for t in facts.tensors:
        _, layer = facts.classify(t.name)
        if layer is not None and plan.tensor_devices.get(t.name) == HOST and len(t.shape) >= 2:
            by_layer[layer] = by_layer.get(layer, 0) + t.nbytes
    return max(by_layer.values(), default=0)


def expected(facts: ModelFacts, case: DeviceCase) -> dict[str, dict[str, float | None]]:
    """The plan's MiB per device and quantity, as an RPC(CPU) device would allocate them (see the module docstring);
    None where the figures are not comparable."""
    plan = plan_case(facts, case)
    offload = op_offload_bytes(facts, plan)
    out: dict[str, dict[str, float | None]] = {}
    for device in plan.devices:
        compute = device[COMPUTE] - (offload if device.name == gpu_name(0) else 0)
        figures = {"weights": device.weights / MiB, "KV": (device[KV_K] + device[KV_V]) / MiB, "compute": compute / MiB}
        out[device.name] = {q: v if case.compared(device.name, q) else None for q, v in figures.items()}
    return out


# --- the comparison ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRow:
    case: DeviceCase
    device: str
    quantity: str
    predicted: float | None  # MiB; None: not comparable on an RPC device
    reported: float  # MiB, as printed (two decimals)

    @property
    def id(self) -> str:
        return f"{self.case.id}/{self.device}/{self.quantity}"

    @property
    def error(self) -> float:
        """(predicted - reported) / reported; 0 when both are 0."""
        assert self.predicted is not None
        if self.reported == 0:
            return 0.0 if self.predicted == 0 else float("inf")
        return (self.predicted - self.reported) / self.reported

    @property
    def within_print(self) -> bool:
        """Whether the prediction rounds to the printed figure (llama.cpp prints %.2f MiB)."""
        return self.predicted is not None and abs(self.predicted - self.reported) <= 0.005 + 1e-9

    @property
    def ok(self) -> bool:
        return self.predicted is None or abs(self.error) <= DEVICE_TARGETS[self.quantity] or self.within_print


def compare(
    case: DeviceCase, want: Mapping[str, Mapping[str, float | None]], got: Mapping[str, Mapping[str, float]]
) -> list[DeviceRow]:
    return [
        DeviceRow(case, device, q, want[device][q], got[device][q]) for device in DEVICES for q in DEVICE_QUANTITIES
    ]


def format_table(rows: Iterable[DeviceRow]) -> str:
    lines = [f"{'case':20} {'device':6} {'quantity':8} {'planned MiB':>11} {'reported MiB':>12} {'error %':>8}  target"]
    for r in rows:
        if r.predicted is None:
            lines.append(
                f"{r.case.id:20} {r.device:6} {r.quantity:8} {'-':>11} {r.reported:12.2f} {'':>8}  not compared"
            )
            continue
        err = "inf" if r.error == float("inf") else f"{100 * r.error:+.2f}"
        mark = "ok" if abs(r.error) <= DEVICE_TARGETS[r.quantity] else ("ok (print)" if r.within_print else "MISS")
        lines.append(
            f"{r.case.id:20} {r.device:6} {r.quantity:8} {r.predicted:11.3f} {r.reported:12.2f} {err:>8}  "
            f"{100 * DEVICE_TARGETS[r.quantity]:.0f}% {mark}"
        )
    return "\n".join(lines)


# --- workers as their Deployments run them (tests/e2e/test_multi_node.py) -----------------------------------------

# ggml-rpc.cpp: a weight tensor larger than this goes to a worker as its hash first; a worker with --cache that has
# the hash's file (saved when the tensor first came whole) loads it from there instead of receiving it.
RPC_HASH_THRESHOLD = 10 * MiB
# The worker's log (stderr; the [..] lines only with GGML_RPC_DEBUG set, except "saved to"):
#   [set_tensor] buffer: 0x..., data: 0x..., offset: 0, size: 11010048        a tensor (or a part) that came whole
#   [set_tensor] saved to '/cache/rpc/5b4e...'                                 ... and went to the cache (--cache)
#   [set_tensor_hash] buffer: 0x..., data: 0x..., offset: 0, size: 11010048, hash: 5b4e...   one found in the cache
SET_TENSOR = re.compile(r"\[set_tensor\] buffer: \S+, data: \S+, offset: \d+, size: (\d+)")
SAVED_TO_CACHE = re.compile(r"\[set_tensor\] saved to '([^']+)'")
HASH_HIT = re.compile(r"\[set_tensor_hash\] buffer: \S+, data: \S+, offset: \d+, size: (\d+), hash: ([0-9a-f]+)")


def localize_worker(args: Sequence[str], port: int) -> list[str]:
    """A worker's rendered args with --host and --port pointed at loopback; each must be there exactly once."""
    out = list(args)
    for flag, value in (("--host", LOOPBACK), ("--port", str(port))):
        positions = [i for i, arg in enumerate(out) if arg == flag]
        assert len(positions) == 1, f"{flag} appears {len(positions)} times in {args}"
        out[positions[0] + 1] = value
    return out


@dataclass(frozen=True)
class Uploads:
    """What one worker received in a stretch of its log (GGML_RPC_DEBUG): bytes that came whole, and tensors
    that came as a hash the worker's cache had."""

    sent_bytes: int
    saved: tuple[str, ...]  # cache files written
    hash_hits: tuple[int, ...]  # sizes of the tensors found in the cache

    @classmethod
    def of(cls, log: str) -> Uploads:
        return cls(
            sum(int(size) for size in SET_TENSOR.findall(log)),
            tuple(SAVED_TO_CACHE.findall(log)),
            tuple(int(size) for size, _ in HASH_HIT.findall(log)),
        )


class RenderedRpcWorkers(RpcWorkers):
    """ggml-rpc-server processes started as their Deployments run them: each container's rendered args with
    only --host and --port changed (loopback, a free port) and the container's environment (the caller points
    its paths, e.g. LLAMA_CACHE, into a temporary folder) on top of this process's."""

    def __init__(
        self,
        binary: str | os.PathLike[str],
        containers: Sequence[tuple[Sequence[str], Mapping[str, str]]],
        folder: Path,
        *,
        timeout: float = 20,
    ):
        super().__init__(binary, len(containers), folder, timeout=timeout)
        self.containers = [(list(args), dict(env)) for args, env in containers]
        self.args: list[list[str]] = []  # what each worker runs

    def __enter__(self) -> RenderedRpcWorkers:
        super().__enter__()
        return self

    def _start(self, i: int) -> None:
        port = free_port()
        rendered, env = self.containers[i]
        args = localize_worker(rendered, port)
        with open(self.log_path(i), "wb") as log:
            proc = subprocess.Popen(
                [str(self.binary), *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **env}, start_new_session=True,
            )  # fmt: skip
        self.ports.append(port)
        self.procs.append(proc)
        self.args.append(args)
