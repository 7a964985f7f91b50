"""benchmarks/data/calibration.yaml: every row well-formed, true to its published source, and plannable with the
placement it states. The error s are not checked here (benchmarks/throughput.py prints them)."""

from __future__ import annotations

import functools
import hashlib
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.throughput import GRID, KINDS, TESTS, USES, Row, fit, log_error, plan, predict, prepare, rows
from llmkube_components.api import InferenceServiceSpec
from llmkube_components.hardware import HardwareProfile
from llmkube_components.planner.catalog import catalog_entries, quantization_scheme
from llmkube_components.planner.memory import HOST, SKIPPED

PUBLISHED = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "published_throughput.yaml"
ROWS = rows()
BY_ID = {row.id: row for row in ROWS}


@functools.cache
def published() -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in yaml.safe_load(PUBLISHED.read_text())}


@functools.cache
def planned(row_id: str) -> Any:
    return plan(BY_ID[row_id])


def ids(selected: list[Row]) -> list[str]:
    return [row.id for row in selected]


def test_ids_are_unique_and_rows_present() -> None:
    assert ROWS
    assert len(BY_ID) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_row_is_well_formed(row: Row) -> None:
    assert row.kind in KINDS and row.test in TESTS and row.use in USES
    assert row.tokens > 0 and row.depth >= 0 and row.measured > 0
    assert row.model in catalog_entries()
    quantization_scheme(row.quantization)  # a label the catalog sizes (CatalogError otherwise)
    HardwareProfile.model_validate(row.profile)
    spec = InferenceServiceSpec.model_validate({"modelRef": "model", **row.service})
    assert spec.offload == "manual"  # the plan keeps the row's placement instead of choosing one
    slots = spec.parallel_slots or 1
    assert (slots > 1) == (row.test == "batch")
    assert spec.context_size is not None and spec.context_size >= slots * (row.depth + row.tokens)
    assert row.notes


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_row_matches_its_published_source(row: Row) -> None:
    source = published().get(row.id)
    assert source is not None, f"{row.id} is not a row of {PUBLISHED.name}"
    assert row.kind == source["kind"]
    assert row.measured == pytest.approx(float(source["tokensPerSecond"]))
    if isinstance(source["depth"], int):
        assert row.depth == source["depth"]


def test_half_of_each_kind_and_test_is_held_out() -> None:
    # Within each (kind, test), rows ordered by the sha256 of their id: every second one is held out.
    # The project's own reference measurements (ids ref-...) always calibrate.
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in ROWS:
        if row.id.startswith("ref-"):
            assert row.use == "calibration"
            continue
        groups.setdefault((row.kind, row.test), []).append(row)
    for members in groups.values():
        ordered = sorted(members, key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())
        assert [r.use for r in ordered] == [USES[i % 2] for i in range(len(ordered))]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_row_is_planned_with_its_speed_query(row: Row) -> None:
    _, service_plan = planned(row.id)
    speed = service_plan.chosen.speed
    assert service_plan.mode == "manual" and service_plan.chosen.fits
    if row.test == "pp":
        assert speed.prompt_tokens == row.tokens
    else:
        assert speed.depth == row.decode_depth
        assert speed.sequences == row.service.get("parallelSlots", 1)
    value = predict(row)
    assert math.isfinite(value) and value > 0
    # The benchmark's  is the plan's own wherever the plan gives one (the plan's prefill starts empty).
    if row.test == "tg":
        assert value == pytest.approx(speed.decode_tokens_per_second, rel=1e-9)
    elif row.test == "batch":
        assert value == pytest.approx(speed.aggregate_decode_tokens_per_second, rel=1e-9)
    elif row.depth == 0:
        assert value == pytest.approx(speed.prefill_tokens_per_second, rel=1e-9)


def test_the_fit_keeps_the_constants_in_use_and_improves_on_the_grids_first_values() -> None:
    prepared = [prepare(row) for row in ROWS]
    calibration = [p for p in prepared if p.row.use == "calibration"]
    before = log_error(calibration)
    found = fit(prepared, rounds=1)
    assert log_error(calibration) == before  # the module's constants are restored
    assert set(found) == set(GRID) and all(found[name] in GRID[name] for name in GRID)


def _block(name: str) -> int | None:
    found = re.match(r"blk\.(\d+)\.", name)
    return int(found.group(1)) if found else None


def expected_on_host(row: Row, names: list[str], block_count: int) -> set[str]:
    """What the row's flags put in system RAM, by llama.cpp's rules: the first blocks beyond -ngl, routed
    experts of --cpu-moe / --n-cpu-moe, tensors an override sends to the CPU (token embeddings aside)."""
    service = row.service
    first_gpu_block = max(0, block_count + 1 - service.get("gpuLayers", 99))
    overrides = [
        re.compile(pattern)
        for value in service.get("tensorOverrides", [])
        for pattern, _, buffer in (item.partition("=") for item in value.split(","))
        if buffer == "CPU"
    ]
    expert_layers = block_count if service.get("moeCPUOffload") else service.get("moeCPULayers", 0)
    host = set()
    for name in names:
        block = _block(name)
        if (
            (block is not None and block < first_gpu_block)
            or (block is not None and "_exps" in name and block < expert_layers)
            or any(p.search(name) for p in overrides)
        ):
            host.add(name)
    return host


GPU_ROWS = [row for row in ROWS if "gpu" in row.profile]


@pytest.mark.parametrize("row", GPU_ROWS, ids=ids(GPU_ROWS))
def test_gpu_row_places_weights_as_its_flags_say(row: Row) -> None:
    stack, service_plan = planned(row.id)
    (service,) = stack.stack.services.values()
    facts = stack.models[service.model.name].facts
    devices = service_plan.chosen.memory.tensor_devices
    loaded = [name for name, where in devices.items() if where != SKIPPED and name != "token_embd.weight"]
    on_host = {name for name in loaded if devices[name] == HOST}
    assert on_host == expected_on_host(row, loaded, facts.block_count)
    assert len(service_plan.chosen.memory.gpus) == row.profile["gpu"]["count"]


CPU_ROWS = [row for row in ROWS if "gpu" not in row.profile]


@pytest.mark.parametrize("row", CPU_ROWS, ids=ids(CPU_ROWS))
def test_cpu_row_runs_on_the_host_only(row: Row) -> None:
    _, service_plan = planned(row.id)
    assert not service_plan.chosen.memory.gpus
