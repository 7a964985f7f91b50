"""A Model's multimodal projector (mmproj) in the plan: read beside the model like a draft model, its weights
on the first GPU (in host memory with --no-mmproj-offload or without GPUs), a warning when it cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmkube_components.planner.facts import ModelFacts, ProjectorFacts
from llmkube_components.planner.memory import HOST, MMPROJ, Placement, SplitMode, plan_memory
from llmkube_components.planner.metadata import read_metadata
from llmkube_components.planner.plan import settings_from_args
from llmkube_components.planner.reader import MetadataReader
from llmkube_components.planner.stack import plan_stack
from llmkube_components.resolve import resolve_stack, validate_stack
from testkit.gguf_files import ModelServer, write_dense, write_projector
from tests.stacks import load_stack


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mmproj")
    return {
        "model": write_dense(root / "m.gguf", n_layer=2, vocab=2000),
        "mmproj": write_projector(root / "mmproj-m.gguf", n_embd=1024),
    }


@pytest.fixture(scope="module")
def projector(files: dict[str, Path]) -> ProjectorFacts:
    return ProjectorFacts.from_metadata(read_metadata(str(files["mmproj"])))


def gpu_profile(usable_bytes: int) -> dict[str, Any]:
    # One GPU whose usable memory is exactly usable_bytes (a reserve of one byte; profiles need one).
    return {"extends": "rtx4090", "gpu": {"memory": str(usable_bytes + 1)}, "reserved": {"gpuMemory": "1"}}


def stack(model: Path, service: dict[str, Any] | None = None, hardware: Any = "rtx4090", **model_fields: Any) -> Any:
    return load_stack(
        {"hardware": hardware, "allowHostPath": True, "models": {"m": {"source": str(model), **model_fields}},
         "services": {"s": {"modelRef": "m", "contextSize": 4096, **(service or {})}}}
    )  # fmt: skip


def test_the_projector_file_is_read_whole(projector: ProjectorFacts) -> None:
    # Its tensors' bytes, as the GGUF reader gives them: v.patch_embd (14 x 14 x 3 x 1024), mm.0 (1024 x 64 + 64),
    # mm.2 (64 x 64), all f32.
    assert projector.weight_bytes == 4 * (14 * 14 * 3 * 1024 + 1024 * 64 + 64 + 64 * 64)


def test_a_relative_mmproj_beside_the_model_is_planned_on_the_first_gpu(
    files: dict[str, Path], projector: ProjectorFacts
) -> None:
    loaded = stack(files["model"], mmproj="mmproj-m.gguf")
    plan = loaded.plans["s"]
    assert plan.output()["byCategory"]["gpu0"][MMPROJ] == projector.weight_bytes
    assert MMPROJ not in plan.output()["byCategory"][HOST]
    assert any("multimodal projector" in note for note in plan.chosen.memory.notes)
    assert not [w for w in loaded.warnings if w.path.endswith("mmproj")]
    without = stack(files["model"]).plans["s"]
    assert plan.chosen.memory.gpus[0].total - without.chosen.memory.gpus[0].total == projector.weight_bytes


def test_no_mmproj_offload_keeps_the_projector_in_host_memory(
    files: dict[str, Path], projector: ProjectorFacts
) -> None:
    plan = stack(files["model"], {"extraArgs": ["--no-mmproj-offload"]}, mmproj="mmproj-m.gguf").plans["s"]
    assert plan.output()["byCategory"][HOST][MMPROJ] == projector.weight_bytes
    assert MMPROJ not in plan.output()["byCategory"]["gpu0"]


@pytest.mark.parametrize(
    ("args", "offload"),
    [([], True), (["--no-mmproj-offload"], False), (["--no-mmproj-offload", "--mmproj-offload"], True)],
)
def test_server_settings_read_the_offload_flag(args: list[str], offload: bool) -> None:
    assert settings_from_args(args, 1).mmproj_offload is offload


@pytest.mark.parametrize(
    ("placement", "offload", "device"),
    [
        (Placement(gpu_count=2), True, "gpu0"),
        # clip_ctx takes the first GPU device, whatever --main-gpu says.
        (Placement(gpu_count=2, split_mode=SplitMode.NONE, main_gpu=1), True, "gpu0"),
        (Placement(gpu_count=2), False, HOST),
        (Placement(gpu_count=0, n_gpu_layers=0), True, HOST),
    ],
)
def test_the_projector_device(
    files: dict[str, Path], projector: ProjectorFacts, placement: Placement, offload: bool, device: str
) -> None:
    facts = ModelFacts.from_metadata(read_metadata(str(files["model"])))
    plan = plan_memory(facts, placement, context_size=1024, mmproj=projector, mmproj_offload=offload)
    assert {d.name: d.bytes[MMPROJ] for d in plan.devices if d.bytes[MMPROJ]} == {device: projector.weight_bytes}
    assert plan.category_totals()[MMPROJ] == projector.weight_bytes


def test_a_model_that_fits_without_its_projector_does_not_fit_with_it(
    files: dict[str, Path], projector: ProjectorFacts
) -> None:
    need = stack(files["model"]).plans["s"].chosen.memory.gpus[0].total
    alone = stack(files["model"], hardware=gpu_profile(need)).plans["s"]
    assert (alone.chosen.label, alone.alternatives) == ("all layers on the GPUs", ())
    vision = stack(files["model"], hardware=gpu_profile(need), mmproj="mmproj-m.gguf").plans["s"]
    (everything,) = [o for o in vision.alternatives if o.label == "all layers on the GPUs"]
    assert not everything.fits
    assert [(s.device, s.missing) for s in everything.shortfalls] == [("gpu0", projector.weight_bytes)]
    assert vision.chosen.label != "all layers on the GPUs"


@pytest.mark.parametrize(
    ("mmproj", "why"),
    [
        ("missing-mmproj.gguf", "its metadata could not be read"),
        ("https://example.com/mmproj.gguf", "its metadata cannot be read offline"),  # the tests plan offline (conftest)
    ],
)
def test_an_unreadable_projector_is_a_warning_not_a_silent_zero(files: dict[str, Path], mmproj: str, why: str) -> None:
    loaded = stack(files["model"], mmproj=mmproj)
    found = [w for w in loaded.warnings if w.path == "models.m.mmproj"]
    assert len(found) == 1, loaded.warnings
    assert found[0].message.startswith(f"the multimodal projector is not in the plan: {why}")
    assert "--no-mmproj-offload" in found[0].message
    assert MMPROJ not in loaded.plans["s"].output()["byCategory"]["gpu0"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModelServer]:
    s = ModelServer(tmp_path / "www")
    yield s
    s.close()


@pytest.mark.parametrize("given", ["relative", "url"])
def test_a_downloaded_models_projector_is_read_where_the_downloader_gets_it(
    server: ModelServer, files: dict[str, Path], projector: ProjectorFacts, tmp_path: Path, given: str
) -> None:
    url = server.serve(files["model"])
    mmproj_url = server.serve(files["mmproj"])
    mmproj = "mmproj-m.gguf" if given == "relative" else mmproj_url
    raw = {
        "hardware": "rtx4090",
        "models": {"m": {"source": url, "mmproj": mmproj}},
        "services": {"s": {"modelRef": "m", "contextSize": 4096}},
    }
    planned = plan_stack(resolve_stack(validate_stack(raw)), MetadataReader(cache_dir=tmp_path / "cache"))
    assert planned.models["m"].mmproj is not None
    assert planned.models["m"].mmproj.weight_bytes == projector.weight_bytes
    assert planned.plans["s"].output()["byCategory"]["gpu0"][MMPROJ] == projector.weight_bytes
