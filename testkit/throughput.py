"""Prefill and decode speed of llama.cpp on this machine (CPU only), to calibrate the planner's speed model.

Two generated models (testkit/gguf_files.py): a dense qwen3 and a qwen3moe, each a few hundred MB, so that one
decode step reads far more weight bytes than the per-token overhead costs. The tensors are zeros except the
token embeddings, the output matrix and the MoE routers, which are random: a zero embedding gives every token the
same (zero) hidden state, so every token would pick the same experts (ties) and a batch would touch two experts
instead of spreading over all of them as a real model's does. Speed does not depend on the other values: the CPU
kernels do the same work for zeros.

Measured with the real tools (tools/setup-llama-server builds them):

- ``llama-bench`` (``-o json``): prompt processing (kind ``pp``) at a few prompt lengths and physical batch sizes
  (``-b 256 -ub 64,256``), and decode (kind ``tg``) of ``gen`` tokens at several depths (``-d``: tokens already in
  the KV cache; llama-bench fills the cache once per depth and restores it for each repetition, and its timing
  excludes that fill). llama-bench feeds random tokens in both, so MoE routing varies as in real text.
- ``llama-server`` with ``--parallel P`` (kind ``server``): P concurrent ``/completion`` requests (same prompt,
  ``cache_prompt: false``, greedy, ``ignore_eos``, ``n_predict`` tokens each), started together. The row's rate is
  the sum over the P requests of the server's own ``timings.predicted_per_second``: the P sequences decode in the
  same batched steps, so each request's rate is one token per step and the sum is the aggregate decode rate.
  ``prompt_tokens_per_second`` is the sum of ``timings.prompt_per_second`` likewise; ``wall_tokens_per_second``
  is every predicted token over the wall time from sending to the last answer (prefill and HTTP included), a
  lower bound to cross-check the server's figures.

Both tools run with flash attention on and an f16 KV cache (what the planner assumes) and llama.cpp's default
weight repacking (``repack`` in each row says what was in effect; for F16 weights this build has no repacked
layout, so it changes nothing). ``threads`` is the physical core count unless given.

Other processes: llama.cpp's CPU threads meet at a barrier after every operation (this build uses OpenMP), so
with as many threads as cores, one core taken by another process stalls all of them: on this 2-core machine a
decode rate of 35 tokens/s dropped to 2-4 while a test suite ran beside it, and nothing in llama.cpp's output
shows it. So every run waits for a quiet machine first, counts the CPU time other processes used during it
(``others_cpu`` in each row: CPUs on average, from /proc/stat minus our own and our children's time), and is
repeated, up to ``attempts`` times, while that is above QUIET; the least disturbed run is kept.

``machine_facts()`` gives what a hardware profile needs for this machine: ``cpuCores`` (physical cores this
process may run on) and ``hostMemoryBandwidth``, measured with numpy (see ``memory_bandwidth``).

    bench, server = require_tool("llama-bench"), require_tool("llama-server")
    models = write_models(tmp)                    # {"dense": path, "moe": path}, cached in tmp
    rows = run_bench(bench, models["dense"], "dense", threads=2)
    rows.append(run_server(server, models["dense"], "dense", parallel=2, folder=tmp, threads=2).row)
    facts = facts_of(models["dense"])             # the planner's ModelFacts of the same file

benchmarks/throughput_measure.py runs all of it and prints the table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, quants

from llmkube_components.api import InferenceServiceSpec, ModelSpec
from llmkube_components.hardware import HardwareProfile
from llmkube_components.planner.facts import ModelFacts
from llmkube_components.planner.plan import SpeedQuery, evaluate
from testkit import gguf_files
from testkit.accuracy import facts_of, model_buffers
from testkit.llama_server import LlamaServer, free_port

# F16: llama.cpp's plain CPU kernels, and no repacked copy (this build repacks neither F16 nor Q8_0 on this CPU:
# the server logs only a CPU_Mapped model buffer). write_models(weight_type="Q8_0") works as well.
WEIGHT_TYPE = "F16"
CACHE_TYPE = "f16"


# --- the models ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    name: str
    kind: str  # "dense" | "moe"
    dims: Mapping[str, Any]


# Sizes at F16 (2 bytes a weight). Dense: 12 layers of 2.6M attention + 12.6M feed-forward weights, 191M
# weights, 382 MB, all read for each token. MoE: 8 layers of 2.6M attention + 32 experts of 1.2M, 4 used, plus
# routers: 331M weights, 664 MB, of which 63M (127 MB, the output matrix included) are read for one token, a
# ratio of active to total weights (0.19) between Qwen3-30B-A3B's (0.1) and a small MoE's. Both use head_dim 64,
# so q8_0 and q4_0 KV caches work too, and a 4096-token vocabulary (embedding and output 8 MB each).
DENSE = {"n_layer": 12, "n_embd": 1024, "n_head": 16, "n_head_kv": 4, "head_dim": 64, "n_ff": 4096,
         "vocab": 4096, "n_ctx_train": 32768}  # fmt: skip
MOE = {"n_layer": 8, "n_embd": 1024, "n_head": 16, "n_head_kv": 4, "head_dim": 64, "n_expert": 32,
       "n_expert_used": 4, "n_ff_exp": 384, "vocab": 4096, "n_ctx_train": 32768}  # fmt: skip
MODELS: tuple[ModelShape, ...] = (ModelShape("dense", "dense", DENSE), ModelShape("moe", "moe", MOE))

# Tensors that get random values (see the module docstring): embeddings, output, routers.
RANDOM_TENSORS = ("token_embd.weight", "output.weight", "ffn_gate_inp.weight")


def _randomize(path: Path, seed: int = 0) -> None:
    """Give RANDOM_TENSORS random values, in place (the file keeps its layout)."""
    rng = np.random.default_rng(seed)
    reader = GGUFReader(path, "r+")
    for tensor in reader.tensors:
        if not tensor.name.endswith(RANDOM_TENSORS):
            continue
        shape = tuple(int(n) for n in reversed(tensor.shape))  # numpy order: ne[0] last
        values = rng.standard_normal(shape, dtype=np.float32) * 0.5
        kind = GGMLQuantizationType(tensor.tensor_type)
        if kind in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            tensor.data[...] = values.astype(tensor.data.dtype)
        else:
            tensor.data[...] = quants.quantize(values, kind).reshape(tensor.data.shape)
    reader.data.flush()  # a np.memmap in mode r+


def write_models(
    folder: Path, shapes: Iterable[ModelShape] = MODELS, *, weight_type: str = WEIGHT_TYPE
) -> dict[str, Path]:
    """Write each shape's model into ``folder`` (kept there: a later call with the same shapes reuses the files,
    named after a hash of the shape). Name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for shape in shapes:
        spec = json.dumps([shape.kind, dict(shape.dims), weight_type, RANDOM_TENSORS], sort_keys=True)
        path = folder / f"{shape.name}-{weight_type}-{hashlib.sha256(spec.encode()).hexdigest()[:10]}.gguf"
        if not path.is_file():
            tmp = path.with_suffix(".tmp.gguf")
            model = (gguf_files.dense_model if shape.kind == "dense" else gguf_files.moe_model)(**shape.dims)
            gguf_files.write_model(tmp, model, weight_type=weight_type)
            _randomize(tmp)
            tmp.rename(path)
        out[shape.name] = path
    return out


# --- the rows --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One measured rate. ``tokens_per_second``: for ``pp`` prompt tokens, for ``tg`` generated tokens (one
    sequence), for ``server`` generated tokens summed over ``parallel`` concurrent sequences."""

    model: str
    kind: str  # "pp" | "tg" | "server"
    n_prompt: int
    n_gen: int
    depth: int
    batch: int
    ubatch: int
    parallel: int
    threads: int
    tokens_per_second: float
    stddev: float
    flash_attn: bool = True
    type_k: str = CACHE_TYPE
    type_v: str = CACHE_TYPE
    repack: bool = True
    prompt_tokens_per_second: float | None = None  # server rows: the prefill rate the server reports
    wall_tokens_per_second: float | None = None  # server rows: predicted tokens / wall time of the round
    others_cpu: float | None = None  # CPUs other processes kept busy during the run, on average (see Interference)

    @property
    def ms_per_token(self) -> float:
        return 1000.0 / self.tokens_per_second if self.tokens_per_second else math.inf


# --- other processes (see the module docstring) -----------------------------------------------------------------


@dataclass(frozen=True)
class CpuSample:
    busy: float  # seconds of CPU time all processes used, from /proc/stat
    ours: float  # seconds of CPU time this process and its waited-for children used
    wall: float


def cpu_sample(pids: Iterable[int] = ()) -> CpuSample:
    """Now; ``pids`` are running children of ours (not yet waited for) whose CPU time counts as ours."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields)
    times = os.times()
    ours = times.user + times.system + times.children_user + times.children_system
    for pid in pids:
        try:  # utime and stime: fields 14 and 15 of /proc/<pid>/stat, after the parenthesized command
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ours += (int(stat[11]) + int(stat[12])) / tick
    return CpuSample(busy=(user + nice + system + irq + softirq + steal) / tick, ours=ours, wall=time.monotonic())


def others_cpu(before: CpuSample, after: CpuSample) -> float:
    """CPUs that other processes kept busy between two samples, on average (0.5: half a core)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    return max(0.0, ((after.busy - before.busy) - (after.ours - before.ours)) / wall)


def wait_quiet(*, below: float = 0.15, max_wait: float = 60.0, window: float = 1.0) -> float:
    """Wait until other processes use fewer than ``below`` CPUs over ``window`` seconds, at most ``max_wait``
    seconds; return what they used in the last window."""
    deadline = time.monotonic() + max_wait
    while True:
        before = cpu_sample()
        time.sleep(window)
        used = others_cpu(before, cpu_sample())
        if used < below or time.monotonic() >= deadline:
            return used


T = TypeVar("T")
QUIET = 0.1  # CPUs other processes may use during a measurement before it is retried


def quietest(measure: Callable[[], T], *, attempts: int = 3, pids: Sequence[int] = ()) -> tuple[T, float]:
    """Run ``measure()`` (after waiting for a quiet machine) until other processes used at most QUIET CPUs
    during it, at most ``attempts`` times; the result that saw the least of them, and how much that was.
    ``pids`` are running children whose CPU time is ours (a server)."""
    best: tuple[T, float] | None = None
    for _ in range(attempts):
        wait_quiet()
        before = cpu_sample(pids)
        result = measure()
        others = others_cpu(before, cpu_sample(pids))
        if best is None or others < best[1]:
            best = (result, others)
        if others <= QUIET:
            break
    assert best is not None
    return best


# --- llama-bench ------------------------------------------------------------------------------------------------


def bench_args(
    model: Path,
    *,
    threads: int,
    prompts: Sequence[int] = (),
    ubatches: Sequence[int] = (),
    batch: int = 256,
    gen: int = 0,
    depths: Sequence[int] = (0,),
    reps: int = 3,
    flash_attn: bool = True,
    cache_type: str = CACHE_TYPE,
    repack: bool = True,
) -> list[str]:
    """llama-bench's arguments for one run: prompt tests if ``prompts``, decode tests if ``gen``. llama-bench
    crosses every list (prompts x ubatches x depths), so a caller asks for prompts or decode, not both."""
    args = [
        "-m", str(model), "-t", str(threads), "-r", str(reps), "-o", "json",
        "-p", ",".join(map(str, prompts)) if prompts else "0", "-n", str(gen),
        "-d", ",".join(map(str, depths)), "-fa", "on" if flash_attn else "off", "-ctk", cache_type,
        "-ctv", cache_type, "--repack", "1" if repack else "0",
    ]  # fmt: skip
    if prompts:
        args += ["-b", str(batch), "-ub", ",".join(map(str, ubatches or (batch,)))]
    return args


def parse_bench_json(text: str, model: str) -> list[Measurement]:
    """Rows from ``llama-bench -o json`` output: one per test, ``pp`` if it processed a prompt, else ``tg``."""
    rows = []
    for test in json.loads(text):
        n_prompt, n_gen = int(test["n_prompt"]), int(test["n_gen"])
        rows.append(
            Measurement(
                model=model,
                kind="pp" if n_prompt else "tg",
                n_prompt=n_prompt,
                n_gen=n_gen,
                depth=int(test.get("n_depth", 0)),
                batch=int(test["n_batch"]),
                ubatch=int(test["n_ubatch"]),
                parallel=1,
                threads=int(test["n_threads"]),
                tokens_per_second=float(test["avg_ts"]),
                stddev=float(test["stddev_ts"]),
                flash_attn=bool(int(test.get("flash_attn", 0)) == 1),  # -1 auto, 0 off, 1 on
                type_k=str(test.get("type_k", CACHE_TYPE)),
                type_v=str(test.get("type_v", CACHE_TYPE)),
                repack=bool(test.get("repack", True)),
            )
        )
    return rows


def run_bench_json(bench: Path, args: Sequence[str], timeout: float = 600) -> str:
    done = subprocess.run([str(bench), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"llama-bench {' '.join(args)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def run_bench(
    bench: Path,
    model: Path,
    name: str,
    *,
    threads: int,
    prompts: Sequence[int] = (64, 256),
    ubatches: Sequence[int] = (64, 256),
    gen: int = 32,
    depths: Sequence[int] = (0, 1024, 4096),
    reps: int = 3,
    flash_attn: bool = True,
    cache_type: str = CACHE_TYPE,
    repack: bool = True,
    attempts: int = 3,
) -> list[Measurement]:
    """Prompt tests (depth 0, ``-b max(ubatches)``) and decode tests (``gen`` tokens at each depth): two runs of
    llama-bench, each repeated (up to ``attempts`` times) while other processes disturb it (see ``quietest``)."""

    def args(**tests: Any) -> list[str]:
        return bench_args(model, threads=threads, reps=reps, flash_attn=flash_attn, cache_type=cache_type,
                          repack=repack, **tests)  # fmt: skip

    rows = []
    for run in (args(prompts=prompts, ubatches=ubatches, batch=max(ubatches)), args(gen=gen, depths=depths)):
        text, others = quietest(partial(run_bench_json, bench, run), attempts=attempts)
        rows += [replace(row, others_cpu=others) for row in parse_bench_json(text, name)]
    return rows


# --- llama-server ----------------------------------------------------------------------------------------------

# A fixed prompt: about 100 tokens of the generated vocabulary (byte tokens and short merges).
PROMPT = " ".join(f"item {i} is {i * 7 % 13}." for i in range(12))


def server_args(
    model: Path, port: int, *, parallel: int, threads: int, context: int, flash_attn: bool = True,
    cache_type: str = CACHE_TYPE, repack: bool = True,
) -> list[str]:  # fmt: skip
    args = [
        "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--ctx-size", str(context),
        "--parallel", str(parallel), "--threads", str(threads), "--threads-batch", str(threads),
        "--flash-attn", "on" if flash_attn else "off", "--cache-type-k", cache_type, "--cache-type-v", cache_type,
        "--cache-ram", "0", "--fit", "off", "-lv", "4",
    ]  # fmt: skip
    if not repack:
        args.append("--no-repack")
    return args


def completion_body(n_predict: int, prompt: str = PROMPT) -> dict[str, Any]:
    return {
        "prompt": prompt, "n_predict": n_predict, "cache_prompt": False, "temperature": 0, "ignore_eos": True,
        "stream": False,
    }  # fmt: skip


@dataclass(frozen=True)
class Round:
    """One round of concurrent requests: each answer's ``timings`` and the round's wall time."""

    timings: tuple[Mapping[str, float], ...]
    wall_seconds: float


def server_measurement(
    model: str, rounds: Sequence[Round], *, parallel: int, threads: int, n_predict: int, context: int,
    flash_attn: bool = True, cache_type: str = CACHE_TYPE, repack: bool = True,
) -> Measurement:  # fmt: skip
    """A ``server`` row from rounds of ``parallel`` concurrent requests: per round the sum of the requests'
    ``predicted_per_second`` (and ``prompt_per_second``); the row has the mean and standard deviation over
    rounds (0 for one round)."""
    decode, prompt, wall = [], [], []
    for r in rounds:
        if len(r.timings) != parallel:
            raise ValueError(f"a round has {len(r.timings)} answers, expected {parallel}")
        decode.append(sum(float(t["predicted_per_second"]) for t in r.timings))
        prompt.append(sum(float(t["prompt_per_second"]) for t in r.timings))
        wall.append(sum(int(t["predicted_n"]) for t in r.timings) / r.wall_seconds)
    n_prompt = {int(t["prompt_n"]) for r in rounds for t in r.timings}
    n_gen = {int(t["predicted_n"]) for r in rounds for t in r.timings}
    if len(n_gen) != 1 or n_gen != {n_predict}:
        raise ValueError(f"requests predicted {sorted(n_gen)} tokens, expected {n_predict} each")
    return Measurement(
        model=model, kind="server", n_prompt=max(n_prompt), n_gen=n_predict, depth=0, batch=context,
        ubatch=0, parallel=parallel, threads=threads, tokens_per_second=statistics.fmean(decode),
        stddev=statistics.stdev(decode) if len(decode) > 1 else 0.0, flash_attn=flash_attn, type_k=cache_type,
        type_v=cache_type, repack=repack, prompt_tokens_per_second=statistics.fmean(prompt),
        wall_tokens_per_second=statistics.fmean(wall),
    )  # fmt: skip


def _round(srv: LlamaServer, parallel: int, body: Mapping[str, Any], timeout: float) -> Round:
    barrier = threading.Barrier(parallel)
    answers: list[Mapping[str, Any]] = [{}] * parallel

    def ask(i: int) -> None:
        barrier.wait()
        status, text = srv.post("/completion", body, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"/completion answered {status}: {text[:500]}")
        answers[i] = json.loads(text)

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        for future in [pool.submit(ask, i) for i in range(parallel)]:
            future.result()
    wall = time.perf_counter() - start
    return Round(tuple(a["timings"] for a in answers), wall)


@dataclass(frozen=True)
class ServerRun:
    row: Measurement
    buffers: dict[str, float]  # the model buffers the server reported (MiB by type: CPU_Mapped, CPU_REPACK, ...)
    log: Path


def run_server(
    server: Path, model: Path, name: str, *, parallel: int, folder: Path, threads: int, n_predict: int = 64,
    rounds: int = 2, flash_attn: bool = True, cache_type: str = CACHE_TYPE, repack: bool = True,
    timeout: float = 120, attempts: int = 3,
) -> ServerRun:  # fmt: skip
    """Start llama-server with ``--parallel parallel``, warm it up with one short request, then run ``rounds``
    rounds of ``parallel`` concurrent requests (all rounds again, up to ``attempts`` times, while other processes
    disturb them: see ``quietest``)."""
    context = parallel * 1024  # each sequence's share holds the ~100-token prompt and n_predict tokens
    log = folder / f"{name}-np{parallel}.log"
    args = server_args(model, free_port(), parallel=parallel, threads=threads, context=context,
                       flash_attn=flash_attn, cache_type=cache_type, repack=repack)  # fmt: skip
    with LlamaServer(server, args, log) as srv:
        assert srv.proc is not None
        _round(srv, 1, completion_body(4), timeout)
        measured, others = quietest(
            lambda: [_round(srv, parallel, completion_body(n_predict), timeout) for _ in range(rounds)],
            attempts=attempts, pids=[srv.proc.pid],
        )  # fmt: skip
    row = server_measurement(name, measured, parallel=parallel, threads=threads, n_predict=n_predict,
                             context=context, flash_attn=flash_attn, cache_type=cache_type, repack=repack)  # fmt: skip
    return ServerRun(replace(row, others_cpu=others), model_buffers(log.read_text(errors="replace")), log)


# --- the machine -----------------------------------------------------------------------------------------------


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on: distinct (package, core) pairs in sysfs."""
    cpus = sorted(os.sched_getaffinity(0))
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def memory_bandwidth(size_bytes: int = 1 << 30, *, threads: int | None = None, runs: int = 5) -> dict[str, float]:
    """Host memory bandwidth in bytes per second, best of ``runs``, with ``threads`` numpy workers (default: the
    physical cores), each on its own slice (numpy releases the GIL in these loops).

    - ``read``: the maximum of a ``size_bytes`` float32 array (``np.max``, a SIMD loop that does one compare per
      value loaded, so memory bound): bytes read / time. The figure for ``hostMemoryBandwidth``. (A sum is not:
      numpy's pairwise summation is slower than the memory on this machine, 14 against 30 GB/s with 2 threads.)
    - ``copy``: copy one ``size_bytes`` array into another: (bytes read + bytes written) / time, as STREAM counts
      it (the cache line fill before each write is not counted).

    ``size_bytes`` should be several times the last-level cache, or the figures are the cache's (1 GiB against
    this machine's 260 MiB L3).
    """
    threads = threads or physical_cores()
    n = size_bytes // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    bounds = [(n * i // threads, n * (i + 1) // threads) for i in range(threads)]

    def timed(work: Callable[[tuple[int, int]], object]) -> float:
        best = math.inf
        with ThreadPoolExecutor(threads) as pool:
            for _ in range(runs):
                start = time.perf_counter()
                list(pool.map(work, bounds))
                best = min(best, time.perf_counter() - start)
        return best

    def read(b: tuple[int, int]) -> object:
        return np.max(src[b[0] : b[1]])

    def copy(b: tuple[int, int]) -> None:
        np.copyto(dst[b[0] : b[1]], src[b[0] : b[1]])

    return {"read": size_bytes / timed(read), "copy": 2 * size_bytes / timed(copy)}


@dataclass(frozen=True)
class MachineFacts:
    """What a hardware profile says about this machine, measured: ``cpuCores`` and ``hostMemoryBandwidth``."""

    cpu_cores: int  # physical cores this process may use
    logical_cpus: int
    host_memory_bandwidth: float  # bytes/s, memory_bandwidth()["read"] with a thread per physical core
    copy_bandwidth: float  # bytes/s, memory_bandwidth()["copy"]
    bandwidth_array_bytes: int
    load_average: tuple[float, float, float]
    others_cpu: float  # CPUs other processes used during the bandwidth runs
    cpu_model: str = ""
    cpu_features: tuple[str, ...] = ()  # those of KIND_FEATURES the CPU has


# CPU flags that tell kinds with one model name apart ("Intel(R) Xeon(R) Processor" names every Xeon VM): AMX marks
# Sapphire Rapids and later, on which the rows ran 22-42% faster than on the calibration machine (December 2026,
# the same 2 cores and model name; llama.cpp's AMX kernels are left out of the build, tools/setup-llama-server).
KIND_FEATURES: Final = ("amx_tile",)


def _cpu_features() -> tuple[str, ...]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return tuple(f for f in KIND_FEATURES if f in flags)
    except OSError:
        pass
    return ()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine_facts(size_bytes: int = 1 << 30, runs: int = 5) -> MachineFacts:
    cores = physical_cores()
    bw, others = quietest(lambda: memory_bandwidth(size_bytes, threads=cores, runs=runs))
    return MachineFacts(
        cpu_cores=cores, logical_cpus=len(os.sched_getaffinity(0)), host_memory_bandwidth=bw["read"],
        copy_bandwidth=bw["copy"], bandwidth_array_bytes=size_bytes, load_average=os.getloadavg(),
        others_cpu=others, cpu_model=_cpu_model(), cpu_features=_cpu_features(),
    )  # fmt: skip


# --- everything --------------------------------------------------------------------------------------------------


def measure_all(
    folder: Path, *, bench: Path, server: Path, threads: int | None = None, parallels: Sequence[int] = (1, 2, 4),
    depths: Sequence[int] = (0, 1024, 4096), reps: int = 3, shapes: Iterable[ModelShape] = MODELS,
    weight_type: str = WEIGHT_TYPE,
) -> dict[str, Any]:  # fmt: skip
    """The whole harness: machine facts, models, llama-bench and llama-server rows, as one JSON-ready dict
    (``rows`` are Measurement dicts; ``models`` has each file's size, the planner's facts and server buffers)."""
    started = time.perf_counter()
    load_before = os.getloadavg()
    threads = threads or physical_cores()
    machine = machine_facts()
    paths = write_models(folder, shapes, weight_type=weight_type)
    rows: list[Measurement] = []
    models: dict[str, Any] = {}
    for name, path in paths.items():
        facts = facts_of(path)
        rows += run_bench(bench, path, name, threads=threads, depths=depths, reps=reps)
        buffers: dict[str, dict[str, float]] = {}
        for parallel in parallels:
            run = run_server(server, path, name, parallel=parallel, folder=folder, threads=threads)
            rows.append(run.row)
            buffers[f"np{parallel}"] = run.buffers
        models[name] = {
            "path": str(path), "file_bytes": path.stat().st_size, "weight_type": weight_type,
            "facts": _facts_summary(facts), "server_model_buffers_mib": buffers,
        }  # fmt: skip
    return {
        "machine": asdict(machine),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "seconds": time.perf_counter() - started,
        "threads": threads,
        "models": models,
        "rows": [asdict(r) for r in rows],
    }


def _facts_summary(facts: ModelFacts) -> dict[str, Any]:
    """Identifying figures of a model for the JSON, and the weight bytes one decode step reads: every tensor but
    the token embeddings (a row lookup) and the unused share of the routed experts (``*_exps``)."""
    weights = sum(t.nbytes for t in facts.tensors)
    experts = sum(t.nbytes for t in facts.tensors if "_exps." in t.name)
    embeddings = sum(t.nbytes for t in facts.tensors if t.name == "token_embd.weight")
    used = facts.expert_used_count / facts.expert_count if facts.expert_count else 0.0
    return {
        "architecture": facts.architecture, "n_layer": facts.n_layer, "n_embd": facts.n_embd,
        "n_head": facts.n_head[0], "n_head_kv": facts.n_head_kv[0], "head_dim": facts.key_length,
        "vocab_size": facts.vocab_size, "expert_count": facts.expert_count,
        "expert_used_count": facts.expert_used_count, "weight_bytes": weights,
        "active_weight_bytes_per_token": weights - embeddings - experts * (1 - used),
        "kv_bytes_per_token_f16": sum(2 * (facts.n_embd_k_gqa(il) + facts.n_embd_v_gqa(il))
                                      for il, kv in enumerate(facts.has_attention_kv) if kv),
    }  # fmt: skip


def format_table(rows: Iterable[Measurement]) -> str:
    head = ("model", "kind", "n_prompt", "n_gen", "depth", "batch", "ubatch", "np", "t", "tok/s", "+-", "ms/tok",
            "prompt tok/s", "wall tok/s", "others")  # fmt: skip
    lines = [head]
    for r in rows:
        lines.append((
            r.model, r.kind, str(r.n_prompt), str(r.n_gen), str(r.depth), str(r.batch), str(r.ubatch),
            str(r.parallel), str(r.threads), f"{r.tokens_per_second:.2f}", f"{r.stddev:.2f}", f"{r.ms_per_token:.2f}",
            "" if r.prompt_tokens_per_second is None else f"{r.prompt_tokens_per_second:.1f}",
            "" if r.wall_tokens_per_second is None else f"{r.wall_tokens_per_second:.2f}",
            "" if r.others_cpu is None else f"{r.others_cpu:.2f}",
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        for line in lines
    )


# --- predicted by the planner ------------------------------------------------------------------------------------


def host_compute(*, size: int = 2048, runs: int = 9) -> float:
    """Float32 FLOPS of this machine's cores, as ``hostCompute`` means it: numpy matrix products (BLAS sgemm,
    ``2 x size^3`` flops each, on every core), which run close to the FMA units' peak. Measured, since a VM does not
    say its clock; the median of ``runs`` after one warm-up, since on this shared VM single runs spread by +-20%
    (205 to 295 GFLOPS within a minute)."""
    a = np.ones((size, size), dtype=np.float32)
    a @ a
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times)


def profile_of(machine: MachineFacts, compute: float) -> HardwareProfile:
    """This machine as a CPU-only hardware profile: its cores, measured bandwidth and measured compute."""
    return HardwareProfile.model_validate(
        {
            "name": "this-machine",
            "hostMemory": "24Gi",
            "hostMemoryBandwidth": f"{machine.host_memory_bandwidth / 1e9:.2f}G",
            "cpuCores": machine.cpu_cores,
            "hostCompute": f"{compute / 1e9:.1f}G",
        }
    )


def predict(row: Measurement, facts: ModelFacts, profile: HardwareProfile) -> float:
    """The planner's figure for a measured row, through its own path (``plan.evaluate``) with the row's settings:

    - ``pp``: prefill of ``n_prompt`` tokens with the row's batch and ubatch, one sequence;
    - ``tg``: decode of one sequence at ``depth + n_gen / 2`` (the mean context of the ``n_gen`` steps);
    - ``server``: the aggregate decode of ``parallel`` sequences at ``n_prompt + n_gen / 2``, the server's context.
    """
    if row.kind == "pp":
        context, parallel, depth = row.n_prompt + row.n_gen + row.depth, 1, 0
    elif row.kind == "tg":
        context, parallel, depth = row.n_prompt + row.n_gen + row.depth, 1, row.depth + row.n_gen // 2
    else:
        context, parallel, depth = row.batch, row.parallel, row.n_prompt + row.n_gen // 2
    fields: dict[str, Any] = {
        "modelRef": "m",
        "contextSize": max(context, 256),
        "parallelSlots": parallel,
        "flashAttention": row.flash_attn,
        "cacheTypeK": row.type_k,
        "cacheTypeV": row.type_v,
        "extraArgs": [] if row.repack else ["--no-repack"],
    }
    if row.kind == "pp":
        fields |= {"batchSize": row.batch, "uBatchSize": row.ubatch}
    spec = InferenceServiceSpec.model_validate(fields)
    model = ModelSpec.model_validate({"source": "file:///generated.gguf"})
    query = SpeedQuery(depth=depth, prompt=max(1, row.n_prompt))
    option = evaluate("measured", {}, spec, model, facts, profile, 0, query=query)
    speed = option.speed
    if row.kind == "pp":
        return speed.prefill_tokens_per_second
    if row.kind == "tg":
        return speed.decode_tokens_per_second
    return speed.aggregate_decode_tokens_per_second


def label(row: Measurement) -> str:
    """A row as the e2e test and the benchmark name it: model, test and its settings."""
    if row.kind == "pp":
        return f"{row.model} pp{row.n_prompt} ubatch {row.ubatch}"
    if row.kind == "tg":
        return f"{row.model} tg{row.n_gen} at depth {row.depth}"
    return f"{row.model} llama-server, {row.parallel} concurrent requests"


@dataclass
class MeasuredMachine:
    """This machine as a profile (measured cores, bandwidth and compute) and its measured rows."""

    folder: Path
    bench: Path
    server: Path
    threads: int
    profile: HardwareProfile
    models: dict[str, str]  # model name -> path
    rows: list[Measurement]
    # A machine like the calibration machine (same CPU model and core count): the CPU-side constants were fitted
    # on its kind. On another CPU the profile is measured in the run, and only that the estimate is not optimistic
    # holds (tests/e2e/test_throughput.py).
    calibrated: bool = True

    def remeasure(self, row: Measurement) -> Measurement:
        """The same row measured again (the least disturbed of up to three runs)."""
        model = Path(self.models[row.model])
        if row.kind == "server":
            return run_server(
                self.server, model, row.model, parallel=row.parallel, folder=self.folder, threads=self.threads
            ).row
        if row.kind == "pp":
            tests: dict[str, Any] = {"prompts": (row.n_prompt,), "ubatches": (row.ubatch,), "batch": row.batch}
        else:
            tests = {"gen": row.n_gen, "depths": (row.depth,)}
        args = bench_args(model, threads=self.threads, reps=3, **tests)
        text, others = quietest(partial(run_bench_json, self.bench, args))
        (again,) = parse_bench_json(text, row.model)
        return replace(again, others_cpu=others)


# This machine's figures as calibrated (benchmarks/data/this_machine.json): its profile for a machine of the same
# CPU model and core count.
CALIBRATED_MACHINE = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "this_machine.json"


def calibrated_profile(path: Path = CALIBRATED_MACHINE) -> HardwareProfile:
    """The committed profile of the calibration machine. Its figures are the medians of several passes: on a shared
    VM one measurement of the memory bandwidth or of sgemm spreads by 20% or more from one minute to the next, more
    than the llama.cpp runs themselves do."""
    data = json.loads(path.read_text())["machine"]
    return HardwareProfile.model_validate(
        {
            "name": "this-machine",
            "hostMemory": "24Gi",
            "hostMemoryBandwidth": str(data["hostMemoryBandwidth"]),
            "cpuCores": data["cpuCores"],
            "hostCompute": str(int(data["hostCompute"])),
        }
    )


def like_calibrated(machine: MachineFacts, path: Path = CALIBRATED_MACHINE) -> bool:
    """Whether ``machine`` is one like the calibration machine: the same CPU model, core count and KIND_FEATURES."""
    data = json.loads(path.read_text())["machine"]
    calibration = (data["cpuModel"], data["cpuCores"], tuple(data.get("cpuFeatures", ())))
    return calibration == (machine.cpu_model, machine.cpu_cores, tuple(machine.cpu_features))


def measure_machine(
    folder: Path, *, bench: Path, server: Path, weight_type: str = "Q8_0", threads: int | None = None
) -> MeasuredMachine:
    """Measure every row of the harness (``measure_all``) on ``weight_type`` models; the machine's profile is the
    calibrated one for a machine like the calibration's, else measured now (``profile_of``)."""
    threads = threads or physical_cores()
    measured = measure_all(folder, bench=bench, server=server, threads=threads, weight_type=weight_type)
    machine = MachineFacts(**{**measured["machine"], "load_average": tuple(measured["machine"]["load_average"])})
    calibrated = like_calibrated(machine)
    profile = calibrated_profile() if calibrated else profile_of(machine, quietest(host_compute)[0])
    return MeasuredMachine(
        folder,
        bench,
        server,
        threads,
        profile,
        {name: model["path"] for name, model in measured["models"].items()},
        [Measurement(**row) for row in measured["rows"]],
        calibrated,
    )
