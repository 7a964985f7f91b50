"""Several nodes on loopback (issue 15): a multiNode stack's rendered arguments, run by real processes.

The stack (``raw_stack``): a CPU-only head and ``multiNode: {size: 3}`` whose ranks 1 and 2 are CPU workers with
160 and 80 MiB usable (hostMemory less reserved.hostMemory), three profile names so no two members share a node.
``pipeline.platform`` renders it as a deployment would; from its output

- each worker is the local ``ggml-rpc-server`` (the Deployment's command is the image's /app/ggml-rpc-server) on
  its Deployment's container args (``--host 0.0.0.0 --port 50052 --cache``) with only --host and --port moved to
  loopback and a free port, and the container's environment with LLAMA_CACHE (the emptyDir's mount) pointed at a
  temporary folder, plus GGML_RPC_DEBUG=1 so that the worker logs what it receives (``testkit/rpc.py``
  RenderedRpcWorkers, Uploads);
- llama-server runs the Deployment's ``server_args`` with only --model, --port and --host localized
  (testkit.llama_server.localize), --rpc's cluster names replaced by the workers' loopback endpoints in rank
  order, and ``-lv 4`` appended for its buffer lines. ``test_only_the_local_parts_change`` holds that.

Workers are llama.cpp's devices in --rpc order, before any GPU of the server's (a CPU-only head has none), so
rank 1 = the first --rpc endpoint = llama.cpp's ``RPC0[127.0.0.1:<rank 1's port>]`` = the plan's gpu0. The 2:1
usable memory makes the plan's --tensor-split uneven (9,4 for the dense model, 6,3 for the MoE), so a swapped
order would show in every device's weights, KV and compute.

Per device (gpu0 = rank 1, gpu1 = rank 2, host = llama-server's CPU), llama.cpp's buffers of the load against
``plan.chosen.memory`` (testkit/rpc.py device_figures; its module docstring says what an RPC(CPU) device allocates
as a GPU would): weights (model buffers against the weight categories) and KV (KV buffers against kv_k + kv_v)
within 1%, compute (compute buffers against compute) within 10%. The multi-node plan already leaves out what a
CPU worker does not have (Placement.rpc_devices: no CUDA runtime, no op offload), so its figures are compared as
they are, with no correction. ``--load-mode none --no-repack`` come from the service's extraArgs, as a user
would write them, for the reasons testkit/rpc.py gives for its cases: with mmap llama.cpp logs the host's weights
as the mapped file range, and with repacking the host's weights may be copied into the CPU's extra buffer types
(AMX, CPU_REPACK) and logged twice. Not compared: ``runtime`` (llama-server's own resident size on the host: no
buffer llama.cpp logs) and the prompt cache (``--cache-ram 0``).

The workers' cache (``--cache``): ggml-rpc sends a weight tensor larger than RPC_HASH_THRESHOLD (10 MiB) as its
hash first; a worker that lacks the file gets the tensor whole and saves it under ``$LLAMA_CACHE/rpc``, and on
the next load the hash finds it and the tensor is not sent. The dense model's vocabulary (21504, so output.weight
is 10.5 MiB of F16, on the last device: rank 2) is sized for that; the MoE model has no tensor that large. So
for each worker, the tensors the plan puts on its device above the threshold must be saved on the first load
(one file of each one's size), found by hash on the second load of a restarted llama-server, and the second
load must send exactly their bytes less. Everything else of the group is one process of each on this machine,
started once per model; no timing is asserted. Missing llama-server or ggml-rpc-server: a failure in CI, a skip
elsewhere (tools/setup-llama-server builds both).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmkube_components.pipeline import ServiceBuild, platform
from llmkube_components.planner.facts import ModelFacts
from llmkube_components.planner.memory import COMPUTE, HOST, KV_K, KV_V, MemoryPlan, gpu_name
from llmkube_components.settings import Settings
from testkit import rpc
from testkit.accuracy import WEIGHT_TYPE, facts_of
from testkit.llama_server import LlamaServer, free_port, localize, require_tool
from testkit.rpc import DEVICE_QUANTITIES, DEVICE_TARGETS, RPC_HASH_THRESHOLD, RenderedRpcWorkers, Uploads

pytestmark = pytest.mark.e2e

SERVER = require_tool("llama-server")
RPC_SERVER = require_tool("ggml-rpc-server")

MiB = 1024 * 1024
SERVICE = "chat"
RANKS = (1, 2)
DEVICES = (*(gpu_name(rank - 1) for rank in RANKS), HOST)
# Usable MiB of each worker's profile, by rank: 2:1, so the plan's --tensor-split is uneven.
USABLE_MIB = {1: 160, 2: 80}
RESERVED_MIB = 1024
CONTEXT = 2048
EXTRA_ARGS = ["--load-mode", "none", "--no-repack", "--cache-ram", "0"]
LOG_LEVEL = ["-lv", "4"]  # llama.cpp's buffer lines
N_PREDICT = 8
# Generous, for a loaded 2-core machine (each start takes well under a second here).
SERVER_TIMEOUT = 180
WORKER_TIMEOUT = 60
# The rendered arguments whose values are this machine's: the model file, where the server listens, and where
# the workers are; nothing else may change.
LOCAL_VALUES = ("--model", "--port", "--host", "--rpc")


@dataclass(frozen=True)
class Shape:
    write: Callable[..., Path]
    dims: dict[str, Any]


# testkit/rpc.py's two-device shapes (each device gets at least two blocks); the dense one with a vocabulary whose
# output matrix (vocab x 256 F16) exceeds ggml-rpc's hash threshold.
SHAPES: Mapping[str, Shape] = {
    "dense": Shape(rpc.SHAPES["dense"].write, {**rpc.SHAPES["dense"].dims, "vocab": 21504}),
    "moe": Shape(rpc.SHAPES["moe"].write, dict(rpc.SHAPES["moe"].dims)),
}


def worker_profile(rank: int) -> dict[str, Any]:
    return {
        "extends": "cpu-only",
        "name": f"loopback-rank{rank}",
        "hostMemory": f"{RESERVED_MIB + USABLE_MIB[rank]}Mi",
        "reserved": {"hostMemory": f"{RESERVED_MIB}Mi"},
    }


def raw_stack(model: Path) -> dict[str, Any]:
    service = {
        "modelRef": "m",
        "contextSize": CONTEXT,
        "multiNode": {
            "size": 1 + len(RANKS),
            "members": [{"rank": r, "hardwareProfile": worker_profile(r)} for r in RANKS],
        },
        "extraArgs": EXTRA_ARGS,
    }
    return {
        "hardware": {"extends": "cpu-only", "name": "loopback-head"},
        "allowHostPath": True,
        "models": {"m": {"source": str(model)}},
        "services": {SERVICE: service},
    }


# --- what the pipeline rendered ------------------------------------------------------------------------------------


def value_of(args: Sequence[str], flag: str) -> str:
    (i,) = [i for i, arg in enumerate(args) if arg == flag]
    return args[i + 1]


def worker_name(rank: int) -> str:
    """The Deployment and headless Service of a rank: the first label of its --rpc host."""
    return f"{SERVICE}-rpc-{rank}"


def worker_deployment(build: ServiceBuild, rank: int) -> dict[str, Any]:
    (deployment,) = [
        m for m in build.workloads if m["kind"] == "Deployment" and m["metadata"]["name"] == worker_name(rank)
    ]
    return dict(deployment)


def worker_container(build: ServiceBuild, rank: int) -> dict[str, Any]:
    (container,) = worker_deployment(build, rank)["spec"]["template"]["spec"]["containers"]
    return dict(container)


def worker_env(container: Mapping[str, Any], cache: Path) -> dict[str, str]:
    """The container's environment on this machine: LLAMA_CACHE (the cache volume's mount) in ``cache``, plus
    GGML_RPC_DEBUG for the log of what the worker receives."""
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert env.get("LLAMA_CACHE") in mounts, f"LLAMA_CACHE {env.get('LLAMA_CACHE')!r} is not a mount of {mounts}"
    return {**env, "LLAMA_CACHE": str(cache), "GGML_RPC_DEBUG": "1"}


def local_args(rendered: Sequence[str], model: Path, port: int, loopback: Mapping[str, str]) -> list[str]:
    """The Deployment's llama-server args on this machine (LOCAL_VALUES): --model, --port and --host localized,
    each --rpc endpoint ``<worker>.<namespace>.svc:<port>`` replaced by that worker's loopback endpoint in the
    same place, and ``-lv 4`` appended unless a log level is there."""
    out = localize(rendered, model, port)
    i = out.index("--rpc") + 1
    out[i] = ",".join(loopback[endpoint.split(".", 1)[0]] for endpoint in out[i].split(","))
    return out if "-lv" in out else [*out, *LOG_LEVEL]


# --- the run -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One llama-server start on the running workers."""

    args: list[str]
    log: str
    health: int
    uploads: tuple[Uploads, ...]  # per rank, from the start to /health 200 (the load and the warmup)
    cached: tuple[dict[str, int] | None, ...]  # per rank: the files in $LLAMA_CACHE/rpc after the load
    rejected: list[str]

    @property
    def devices(self) -> list[str]:
        """The workers' endpoints in llama.cpp's device order (--rpc's)."""
        return value_of(self.args, "--rpc").split(",")


@dataclass(frozen=True)
class Group:
    shape: str
    facts: ModelFacts
    build: ServiceBuild
    worker_args: tuple[list[str], ...]  # what each rank's worker ran
    endpoints: tuple[str, ...]  # where each rank's worker listened
    loads: tuple[Load, ...]  # the first start and a restart
    completion: tuple[int, str]

    @property
    def memory(self) -> MemoryPlan:
        assert self.build.plan is not None
        return self.build.plan.chosen.memory

    @property
    def rendered(self) -> list[str]:
        assert self.build.server_args is not None
        return self.build.server_args

    def large_tensors(self, device: str) -> list[int]:
        """Bytes of each tensor the plan puts on ``device`` that ggml-rpc sends by hash first."""
        placed = self.memory.tensor_devices
        return sorted(
            t.nbytes for t in self.facts.tensors if placed.get(t.name) == device and t.nbytes > RPC_HASH_THRESHOLD
        )


def cache_files(cache: Path) -> dict[str, int] | None:
    """The worker's cache files, name -> bytes; None without the folder ggml-rpc-server --cache creates at start
    (tools/rpc/rpc-server.cpp: fs_get_cache_directory(), i.e. $LLAMA_CACHE, / "rpc")."""
    folder = cache / "rpc"
    return {f.name: f.stat().st_size for f in folder.iterdir()} if folder.is_dir() else None


def load(
    workers: RenderedRpcWorkers, args: list[str], log_path: Path, caches: Sequence[Path], complete: bool
) -> tuple[Load, tuple[int, str] | None]:
    """Start llama-server, read what each worker received until /health was 200, optionally ask for a completion,
    stop it and list the workers' caches."""
    marks = [len(workers.log(i)) for i in range(workers.count)]
    completion = None
    with LlamaServer(SERVER, args, log_path, timeout=SERVER_TIMEOUT) as srv:
        # /health is 200 after the warmup, whose results llama-server waited for: the workers have logged the load.
        uploads = tuple(Uploads.of(workers.log(i)[mark:]) for i, mark in enumerate(marks))
        health, _ = srv.get("/health")
        if complete:
            body = {"prompt": "Hello", "n_predict": N_PREDICT, "ignore_eos": True, "temperature": 0}
            completion = srv.post("/completion", body, timeout=SERVER_TIMEOUT)
    cached = tuple(cache_files(c) for c in caches)
    return Load(args, srv.log(), health, uploads, cached, srv.rejected_lines()), completion


@pytest.fixture(scope="module", params=list(SHAPES))
def group(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Group:
    """The stack of ``request.param``'s model rendered; its workers started; llama-server started on its args,
    asked for a completion, stopped, and started once more on the same workers; everything stopped."""
    shape = SHAPES[request.param]
    folder = tmp_path_factory.mktemp(f"multi-node-{request.param}")
    model = shape.write(folder / f"{request.param}.gguf", weight_type=WEIGHT_TYPE, **shape.dims)
    build = platform(raw_stack(model), Settings(offline=True)).services[SERVICE]
    assert build.server_args is not None and build.plan is not None
    caches = [folder / f"rank{rank}-cache" for rank in RANKS]
    containers = [worker_container(build, rank) for rank in RANKS]
    run = [(c["args"], worker_env(c, cache)) for c, cache in zip(containers, caches, strict=True)]
    loads: list[Load] = []
    completion: tuple[int, str] | None = None
    with RenderedRpcWorkers(RPC_SERVER, run, folder, timeout=WORKER_TIMEOUT) as workers:
        loopback = {worker_name(rank): endpoint for rank, endpoint in zip(RANKS, workers.endpoints, strict=True)}
        for n in (1, 2):
            args = local_args(build.server_args, model, free_port(), loopback)
            got, answer = load(workers, args, folder / f"llama-server-{n}.log", caches, complete=n == 1)
            loads.append(got)
            completion = completion or answer
    assert completion is not None
    return Group(request.param, facts_of(model), build, tuple(workers.args), tuple(workers.endpoints), tuple(loads),
                 completion)  # fmt: skip


# --- the checks ----------------------------------------------------------------------------------------------------


def test_the_group_is_rendered_in_rank_order(group: Group) -> None:
    rendered = group.rendered
    endpoints = value_of(rendered, "--rpc").split(",")
    assert [e.split(".", 1)[0] for e in endpoints] == [worker_name(rank) for rank in RANKS]
    for rank, endpoint in zip(RANKS, endpoints, strict=True):
        deployment = worker_deployment(group.build, rank)
        assert deployment["metadata"]["labels"]["inference.llmkube.dev/rank"] == str(rank)
        # llama-server dials the port the worker listens on.
        assert endpoint.rsplit(":", 1)[1] == value_of(worker_container(group.build, rank)["args"], "--port")
        assert "--cache" in worker_container(group.build, rank)["args"]
    assert group.build.plan is not None
    assert group.build.plan.device_names() == {
        gpu_name(rank - 1): f"rank {rank} CPU (loopback-rank{rank})" for rank in RANKS
    }
    # Uneven: rank 1 (more usable memory) takes more layers; the shares are the plan's layers per device.
    split = [int(share) for share in value_of(rendered, "--tensor-split").split(",")]
    layers = [group.memory.layer_devices.count(gpu_name(rank - 1)) for rank in RANKS]
    assert split == layers and split[0] > split[1], (split, layers)


def test_only_the_local_parts_change(group: Group) -> None:
    rendered = group.rendered
    local = {rendered.index(flag) + 1 for flag in LOCAL_VALUES}
    for run in group.loads:
        assert run.args[len(rendered) :] == ([] if "-lv" in rendered else LOG_LEVEL)
        changed = {i for i, (a, b) in enumerate(zip(rendered, run.args[: len(rendered)], strict=True)) if a != b}
        assert changed <= local, [rendered[i - 1] for i in sorted(changed - local)]
        # Rank r's worker is where the rendered --rpc names rank r.
        assert run.devices == list(group.endpoints)
    for rank, args in zip(RANKS, group.worker_args, strict=True):
        container = worker_container(group.build, rank)["args"]
        assert len(args) == len(container), (container, args)
        changed = {i for i, (a, b) in enumerate(zip(container, args, strict=True)) if a != b}
        assert {container[i - 1] for i in changed} <= {"--host", "--port"}, (container, args)


def test_the_group_serves(group: Group) -> None:
    for run in group.loads:
        assert run.health == 200
        assert run.rejected == [], "llama-server complained about the rendered arguments"
    status, body = group.completion
    assert status == 200, body
    assert json.loads(body)["tokens_predicted"] == N_PREDICT, body


@pytest.mark.parametrize("quantity", DEVICE_QUANTITIES)
@pytest.mark.parametrize("device", DEVICES)
def test_device_buffers_match_the_plan(group: Group, device: str, quantity: str) -> None:
    d = group.memory.device(device)
    want = {"weights": d.weights, "KV": d[KV_K] + d[KV_V], "compute": d[COMPUTE]}[quantity] / MiB
    for n, run in enumerate(group.loads, start=1):
        # By rank: rank r's worker (wherever --rpc put it) against the plan's gpu<r-1>, which device_names says is
        # rank r's; and the host (llama-server's CPU buffers).
        got = rpc.device_figures(run.log, group.endpoints)[device][quantity]
        error = (want - got) / got if got else (0.0 if want == 0 else float("inf"))
        within_print = abs(want - got) <= 0.005 + 1e-9  # llama.cpp prints two decimals
        assert abs(error) <= DEVICE_TARGETS[quantity] or within_print, (
            f"{group.shape} load {n} {device} {quantity}: planned {want:.3f} MiB, llama.cpp {got:.2f} MiB, "
            f"error {error:+.2%} (target {DEVICE_TARGETS[quantity]:.0%})"
        )


def test_workers_cache_large_tensors_for_the_next_load(group: Group) -> None:
    first, second = group.loads
    for i, rank in enumerate(RANKS):
        large = group.large_tensors(gpu_name(i))
        where = f"rank {rank} ({group.shape}, {len(large)} tensors above {RPC_HASH_THRESHOLD // MiB} MiB)"
        # The first load sends them whole and the worker keeps each in a file of its size, under LLAMA_CACHE.
        cached = first.cached[i]
        assert cached is not None, f"{where}: no $LLAMA_CACHE/rpc"
        assert len(first.uploads[i].saved) == len(large) and not first.uploads[i].hash_hits, where
        assert sorted(cached.values()) == large, where
        # The restarted server's load finds them by hash, and sends exactly their bytes less.
        assert sorted(second.uploads[i].hash_hits) == large and not second.uploads[i].saved, where
        assert second.cached[i] == cached, where
        assert first.uploads[i].sent_bytes - second.uploads[i].sent_bytes == sum(large), where
    if group.shape == "dense":
        assert group.large_tensors(gpu_name(1)), "the dense model is sized so that rank 2 caches output.weight"
