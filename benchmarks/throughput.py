"""Predicted against published llama.cpp throughput: every row of data/calibration.yaml planned offline.

Each row is a stack config (its inline hardware profile, a catalog model, one service with the run's fields)
that goes through ``pipeline.load`` as ``llmkube plan`` does, with the speed query of the row:

- tg: decode at ``depth + tokens / 2`` (the mean context of ``tokens`` steps from ``depth``), one sequence;
- batch: the aggregate decode of ``parallelSlots`` sequences at the same depth;
- pp: the prefill figure of a ``tokens`` prompt. The plan gives it from an empty context only (SpeedQuery has
  no prefill depth), so a row with ``depth > 0`` runs the planner's own ``throughput.prefill`` on the chosen
  placement with that depth; the table marks those rows with ``*``.

A row that does not fit its profile prints the planner's message instead of a number. Prints figures and
asserts nothing; exits 0 (tests/test_throughput_calibration.py checks the rows are plannable). Run from the
repository root: ``.venv/bin/python -m benchmarks.throughput`` (or ``python benchmarks/throughput.py``).

``--fit`` also refits the speed model's constants on the calibration rows (``fit``: coordinate descent over
``GRID``, minimising the mean |ln(predicted / measured)|) and prints them beside the values in use, with the
error on the calibration and the holdout rows: how planner/throughput.py's constants were found.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a file: import the package from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmkube_components import pipeline
from llmkube_components.errors import ConfigError
from llmkube_components.hardware import HardwareProfile
from llmkube_components.planner import throughput
from llmkube_components.planner.facts import ModelFacts
from llmkube_components.planner.plan import ServicePlan, machine, server_settings
from llmkube_components.planner.stack import PlannedStack
from llmkube_components.planner.throughput import Machine, Workload, decode_step, prefill, workload
from llmkube_components.settings import Settings
from testkit.accuracy import facts_of
from testkit.throughput import Measurement, calibrated_profile, label, write_models
from testkit.throughput import predict as predict_measurement

CALIBRATION = Path(__file__).resolve().parent / "data" / "calibration.yaml"
TESTS = ("pp", "tg", "batch")
USES = ("calibration", "holdout")
KINDS = ("full-gpu-dense", "full-gpu-moe", "hybrid-moe", "cpu-only", "depth", "concurrency")
SERVICE = "bench"  # the one service of a row's stack


@dataclass(frozen=True)
class Row:
    """One published measurement, as the planner is asked about it (field meanings: calibration.yaml's header)."""

    id: str
    kind: str
    profile: dict[str, Any]
    model: str
    quantization: str
    service: dict[str, Any]
    test: str
    tokens: int
    depth: int
    measured: float
    use: str
    notes: str = ""

    @property
    def decode_depth(self) -> int:
        """Context depth of the decode figure: the mean over ``tokens`` steps from ``depth`` (0 for pp)."""
        return self.depth + self.tokens // 2 if self.test != "pp" else 0

    @property
    def prefill_at_depth(self) -> bool:
        """A prompt after tokens already in context: the plan's own figure does not cover it."""
        return self.test == "pp" and self.depth > 0


def rows(path: Path = CALIBRATION) -> list[Row]:
    """The rows of calibration.yaml, in file order."""
    raw = yaml.safe_load(path.read_text())
    return [Row(**item) for item in raw]


def stack_config(row: Row) -> dict[str, Any]:
    """The llmkube config of the row: its profile, the catalog model at its quantization, one service."""
    return {
        "hardware": row.profile,
        "models": {
            "model": {
                # A placeholder source: offline, the planner sizes the model from the catalog entry.
                "source": f"https://catalog.invalid/{row.model}-{row.quantization}.gguf",
                "catalog": row.model,
                "quantization": row.quantization,
            }
        },
        "services": {SERVICE: {"modelRef": "model", **row.service}},
    }


def settings(row: Row) -> Settings:
    """Offline planning, with the speed query of the row (decode depth, prompt length)."""
    return Settings(
        offline=True,
        node_check=False,
        decode_depth=row.decode_depth,
        prompt_tokens=row.tokens if row.test == "pp" else Settings().prompt_tokens,
    )


class DoesNotFit(Exception):
    """The row's placement does not fit its profile (or the config is refused): the planner's messages."""


def plan(row: Row) -> tuple[PlannedStack, ServicePlan]:
    """The planned stack of the row and its service's plan; DoesNotFit with the planner's messages."""
    try:
        planned = pipeline.load(stack_config(row), settings(row))
    except ConfigError as exc:
        raise DoesNotFit("; ".join(str(p) for p in exc.problems)) from None
    (service_plan,) = planned.plans.values()
    return planned, service_plan


def predict(row: Row) -> float:
    """The planner's tokens/s for the row's test (DoesNotFit when the row's placement does not fit)."""
    return estimate(prepare(row))


@dataclass(frozen=True)
class Prepared:
    """A row's planned placement as the speed model reads it: what each device holds, and the hardware."""

    row: Row
    load: Workload
    machine: Machine
    ubatch: int


def prepare(row: Row) -> Prepared:
    """Plan the row (its placement does not depend on the speed constants: every row is offload: manual)."""
    planned, service_plan = plan(row)
    (service,) = planned.stack.services.values()
    facts = planned.models[service.model.name].facts
    assert facts is not None  # a plan exists, so the model has facts
    server = server_settings(service.spec, service.model.spec, service.gpu_count)
    load = workload(
        service_plan.chosen.memory,
        facts,
        server.cache_type_k,
        server.cache_type_v,
        kv_on_host=server.placement.no_kv_offload,
    )
    return Prepared(row, load, machine(service.profile), server.ubatch)


def estimate(prepared: Prepared) -> float:
    """The row's figure from the speed model's current constants: the same functions the plan's figures come
    from, with the prompt after ``depth`` tokens for a pp row at depth (the plan's prefill starts empty)."""
    row, load, hardware = prepared.row, prepared.load, prepared.machine
    if row.test == "pp":
        return row.tokens / prefill(load, hardware, prompt=row.tokens, depth=row.depth, ubatch=prepared.ubatch).seconds
    sequences = int(row.service.get("parallelSlots", 1)) if row.test == "batch" else 1
    return sequences / decode_step(load, hardware, sequences=sequences, depth=row.decode_depth).seconds


# --- calibration: the constants of planner/throughput.py fitted on the calibration rows -------------------------

# The values each constant may take: physically plausible ranges, coarse enough not to chase single rows.
GRID: dict[str, tuple[float, ...]] = {
    "GPU_MEMORY_EFFICIENCY": (0.75, 0.8, 0.85, 0.9, 0.95),
    "HOST_MEMORY_EFFICIENCY": (0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    "GPU_COMPUTE_EFFICIENCY": (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    "GPU_DECODE_COMPUTE_EFFICIENCY": (0.03, 0.05, 0.08, 0.12, 0.2, 0.4),
    "LINK_EFFICIENCY": (0.5, 0.65, 0.8, 0.9),
    "SPLIT_SECONDS": (2e-5, 5e-5, 8e-5, 1.2e-4, 1.6e-4, 2e-4),
    "EXPERT_HALF_TOKENS": (8.0, 16.0, 32.0, 64.0, 128.0),
    "GPU_OP_SECONDS": (0.5e-6, 1e-6, 1.5e-6, 2.5e-6, 4e-6),
}


# --- this machine: the CPU-side terms ------------------------------------------------------------------------------

THIS_MACHINE = Path(__file__).resolve().parent / "data" / "this_machine.json"

# The CPU-side constants, fitted on this machine's measurements before the rest is fitted on the published rows.
CPU_GRID: dict[str, tuple[float, ...]] = {
    "HOST_DECODE_COMPUTE_EFFICIENCY": (0.04, 0.06, 0.08, 0.09, 0.1, 0.11, 0.12, 0.15, 0.2),
    "HOST_COMPUTE_EFFICIENCY": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0),
    "HOST_EXPERT_COMPUTE_EFFICIENCY": (0.1, 0.15, 0.2, 0.25, 0.3, 0.4),
    "HOST_ATTENTION_EFFICIENCY": (0.005, 0.008, 0.01, 0.0125, 0.015, 0.02, 0.03),
    "HOST_BATCH_EXPONENT": (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
    "HOST_OP_SECONDS": (1e-6, 2e-6, 4e-6, 6e-6, 1e-5, 2e-5),
    "STEP_SECONDS": (1e-4, 2e-4, 5e-4, 1e-3, 2e-3),
    "UBATCH_SECONDS": (5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2),
}


@dataclass(frozen=True)
class MachineRow:
    row: Measurement
    facts: ModelFacts
    profile: HardwareProfile

    def predicted(self) -> float:
        return predict_measurement(self.row, self.facts, self.profile)


def machine_rows(folder: Path, path: Path = THIS_MACHINE) -> list[MachineRow]:
    """This machine's committed measurements, with the facts of the same generated models (written into
    ``folder``: the generator is deterministic) and the machine as a profile."""
    data = json.loads(path.read_text())
    profile = calibrated_profile(path)
    models = write_models(folder, weight_type=data["weightType"])
    facts = {name: facts_of(p) for name, p in models.items()}
    known = {f.name for f in dataclasses.fields(Measurement)}  # rows also list each pass ("runs")
    measured = [Measurement(**{k: v for k, v in r.items() if k in known}) for r in data["rows"]]
    return [MachineRow(m, facts[m.model], profile) for m in measured]


def machine_error(rows: Sequence[MachineRow]) -> float:
    return sum(abs(math.log(r.predicted() / r.row.tokens_per_second)) for r in rows) / len(rows)


def machine_objective(rows: Sequence[MachineRow]) -> float:
    """What the CPU-side fit minimises: the worst row first (the e2e test holds every row to 20%), then the mean."""
    errors = [abs(math.log(r.predicted() / r.row.tokens_per_second)) for r in rows]
    return max(errors) + sum(errors) / len(errors)


def format_machine(rows: Sequence[MachineRow]) -> str:
    lines = ["this machine (benchmarks/data/this_machine.json), predicted by the planner:"]
    for r in rows:
        predicted = r.predicted()
        error = 100 * (predicted / r.row.tokens_per_second - 1)
        lines.append(f"  {label(r.row):<48} {r.row.tokens_per_second:>8.1f} {predicted:>8.1f} {error:>+6.1f}%")
    worst = max(abs(r.predicted() / r.row.tokens_per_second - 1) for r in rows)
    lines.append(f"  largest error {100 * worst:.1f}%")
    return "\n".join(lines)


def _descend(grid: Mapping[str, Sequence[float]], score: Callable[[], float], rounds: int) -> dict[str, float]:
    """Coordinate descent: each constant in turn takes the grid value with the lowest score; ``rounds`` passes.
    Leaves the found values set in planner/throughput.py (the caller restores them)."""
    for _ in range(rounds):
        for name, values in grid.items():
            scores = []
            for value in values:
                setattr(throughput, name, value)
                scores.append((score(), value))
            setattr(throughput, name, min(scores)[1])
    return {name: getattr(throughput, name) for name in grid}


def log_error(prepared: Sequence[Prepared]) -> float:
    """Mean |ln(predicted / measured)| over the rows: over- and under-estimates weigh the same."""
    return sum(abs(math.log(estimate(p) / p.row.measured)) for p in prepared) / len(prepared)


def fit(prepared: Sequence[Prepared], machine: Sequence[MachineRow] = (), rounds: int = 3) -> dict[str, float]:
    """The constants, found in two stages: the CPU-side ones (CPU_GRID) on this machine's measurements
    (``machine_objective``: worst row, then mean), then the rest (GRID) on the calibration rows with those held
    (the mean |ln(predicted / measured)|). Each a coordinate descent. Leaves the module's constants as found."""
    saved = {name: getattr(throughput, name) for name in (*CPU_GRID, *GRID)}
    calibration = [p for p in prepared if p.row.use == "calibration"]
    try:
        found = _descend(CPU_GRID, lambda: machine_objective(machine), rounds) if machine else {}
        return {**found, **_descend(GRID, lambda: log_error(calibration), rounds)}
    finally:
        for name, value in saved.items():
            setattr(throughput, name, value)


@dataclass(frozen=True)
class Result:
    row: Row
    predicted: float | None  # None: no figure (see problem)
    problem: str = ""

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured, in percent."""
        if self.predicted is None:
            return None
        return 100.0 * (self.predicted - self.row.measured) / self.row.measured


def evaluate(row: Row) -> Result:
    """The row's prediction, or why there is none (a report: nothing here raises)."""
    try:
        return Result(row, predict(row))
    except DoesNotFit as exc:
        return Result(row, None, f"does not fit: {exc}")
    except Exception as exc:  # one broken row must not stop the report
        return Result(row, None, f"error: {type(exc).__name__}: {exc}")


def _mean_abs(results: Iterable[Result]) -> tuple[float, int] | None:
    errors = [abs(r.error) for r in results if r.error is not None]
    return (sum(errors) / len(errors), len(errors)) if errors else None


def format_table(results: Sequence[Result]) -> str:
    """Per row: id, kind, test, use, measured, predicted, error; then the mean absolute error per use and test,
    and per use and kind."""
    width = max(len(r.row.id) for r in results)
    head = f"{'id':<{width}}  {'kind':<14}  {'test':<5}  {'use':<11}  {'measured':>9}  {'predicted':>10}  {'error':>7}"
    lines = [head, "-" * len(head)]
    for r in results:
        test = r.row.test + ("*" if r.row.prefill_at_depth else "")
        start = f"{r.row.id:<{width}}  {r.row.kind:<14}  {test:<5}  {r.row.use:<11}  {r.row.measured:>9.2f}"
        if r.predicted is None:
            lines.append(f"{start}  {r.problem}")
        else:
            lines.append(f"{start}  {r.predicted:>10.2f}  {r.error:>+6.1f}%")
    note = "* pp after `depth` tokens: throughput.prefill on the plan's placement (SpeedQuery has no prefill depth)"
    lines += ["", note]
    for by, key, values in (("test", "test", TESTS), ("kind", "kind", KINDS)):
        lines += ["", f"mean absolute error by use and {by} (rows with a figure)"]
        for use in USES:
            cells = []
            for value in values:
                found = _mean_abs(r for r in results if r.row.use == use and getattr(r.row, key) == value)
                if found is not None:
                    cells.append(f"{value} {found[0]:.1f}% (n={found[1]})")
            overall = _mean_abs(r for r in results if r.row.use == use)
            total = f"all {overall[0]:.1f}% (n={overall[1]})" if overall else "all -"
            lines.append(f"  {use:<11}  {total};  " + "; ".join(cells))
    missing = [r for r in results if r.predicted is None]
    if missing:
        lines += ["", f"{len(missing)} row(s) without a figure: " + ", ".join(r.row.id for r in missing)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        results = [evaluate(row) for row in rows()]
    except Exception as exc:  # a report: say what broke, exit 0
        print(f"benchmarks.throughput: cannot read {CALIBRATION}: {type(exc).__name__}: {exc}")
        return 0
    print(format_table(results))
    with tempfile.TemporaryDirectory() as folder:
        machine = machine_rows(Path(folder))
        print()
        print(format_machine(machine))
        if "--fit" in args:
            prepared = [prepare(r.row) for r in results if r.predicted is not None]
            found = fit(prepared, machine)
            print(
                "\nfitted: CPU-side on this machine, the rest on the calibration rows (planner/throughput.py holds "
                "the values in use):"
            )
            for name, value in found.items():
                print(f"  {name} = {value:g} (in use: {getattr(throughput, name):g})")
            calibrated = [p for p in prepared if p.row.use == "calibration"]
            held = [p for p in prepared if p.row.use == "holdout"]
            errors = f"calibration {log_error(calibrated):.3f}, holdout {log_error(held):.3f}"
            print(
                f"mean |ln(predicted/measured)| with the constants in use: {errors}; this machine "
                f"{machine_error(machine):.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
