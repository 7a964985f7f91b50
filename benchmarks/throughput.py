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
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a file: import the package from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmkube_components import pipeline
from llmkube_components.errors import ConfigError
from llmkube_components.planner.plan import ServicePlan, machine, server_settings
from llmkube_components.planner.stack import PlannedStack
from llmkube_components.planner.throughput import prefill, workload
from llmkube_components.settings import Settings

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
    return figure(row, *plan(row))


def figure(row: Row, planned: PlannedStack, service_plan: ServicePlan) -> float:
    """The tokens/s of the row's test in its plan (``plan(row)``)."""
    speed = service_plan.chosen.speed
    if row.test == "tg":
        return speed.decode_tokens_per_second
    if row.test == "batch":
        return speed.aggregate_decode_tokens_per_second
    if not row.prefill_at_depth:
        return speed.prefill_tokens_per_second
    # What _evaluate does for the plan's figures, with the prompt after ``depth`` tokens of context.
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
    step = prefill(load, machine(service.profile), prompt=row.tokens, depth=row.depth, ubatch=server.ubatch)
    return row.tokens / step.seconds


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
    for label, key, values in (("test", "test", TESTS), ("kind", "kind", KINDS)):
        lines += ["", f"mean absolute error by use and {label} (rows with a figure)"]
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


def main() -> int:
    try:
        results = [evaluate(row) for row in rows()]
    except Exception as exc:  # a report: say what broke, exit 0
        print(f"benchmarks.throughput: cannot read {CALIBRATION}: {type(exc).__name__}: {exc}")
        return 0
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
