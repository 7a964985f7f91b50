"""Planning a whole stack: model facts for each model (file, else catalog), then a plan per service.

Runs between resolution and the builders. For ``offload: auto`` services the plan's decision becomes part
of the effective spec (the offload fields and resources.hostMemory), so both deliveries deploy it: the
workloads we render and the custom resources the operator reads.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import PurePosixPath

from ..api.service import InferenceResources
from ..errors import ConfigError, Problem, config_path
from ..resolve import ResolvedModel, ResolvedService, ResolvedStack
from .catalog import CatalogError, catalog_entries, catalog_metadata, recognise, recognise_quantization
from .facts import ModelFacts, ModelFactsError
from .gguf import MetadataError, read_metadata
from .plan import GiB, ServicePlan, plan_service

# Set to 1 to plan from the catalog only, without reading model files over the network (tests, air gaps).
OFFLINE_ENV = "LLMKUBE_OFFLINE"
TIMEOUT_ENV = "LLMKUBE_METADATA_TIMEOUT"
DEFAULT_TIMEOUT = 10.0


def offline() -> bool:
    """No network for metadata: local files are still read."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0", "false")


def model_facts(model: ResolvedModel) -> tuple[ModelFacts | None, str | None, list[Problem]]:
    """The model's facts, whether they are a catalog estimate (saying why), and warnings."""
    warnings: list[Problem] = []
    why = "planning offline (LLMKUBE_OFFLINE)"
    local = model.spec.source.startswith(("/", "file://"))
    if local or not offline():
        try:
            meta = read_metadata(
                model.spec.source,
                files=model.spec.files or (),
                timeout=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)),
            )
            return ModelFacts.from_metadata(meta), None, []
        except (MetadataError, ModelFactsError) as exc:
            why = f"its metadata could not be read ({exc.message})"
    name = PurePosixPath(model.spec.source.split("?")[0]).name
    entry = model.spec.catalog or recognise(name)
    if entry is None:
        warnings.append(
            Problem(
                model.path,
                f"no plan: {why}, and no catalog entry matches {name!r}; set models.{model.key}.catalog to one of "
                f"{', '.join(sorted(catalog_entries()))} if it is one of them",
            )
        )
        return None, None, warnings
    try:
        meta = catalog_metadata(entry, model.spec.quantization or recognise_quantization(name))
    except CatalogError as exc:
        raise ConfigError.at(config_path(model.path, "catalog"), str(exc)) from None
    return ModelFacts.from_metadata(meta), f"catalog estimate ({entry}): {why}", warnings


def plan_stack(stack: ResolvedStack) -> ResolvedStack:
    """The stack with a plan per service and the auto decisions applied; ConfigError when a plan cannot fit."""
    from .. import llamacpp

    problems: list[Problem] = []
    warnings = list(stack.warnings)
    facts_by_model: dict[str, tuple[ModelFacts | None, str | None]] = {}
    for model in stack.models.values():
        facts, estimate, found = model_facts(model)
        facts_by_model[model.name] = (facts, estimate)
        warnings += found

    plans: dict[str, ServicePlan] = {}
    services: dict[str, ResolvedService] = {}
    for name, service in stack.services.items():
        facts, estimate = facts_by_model[service.model.name]
        services[name] = service
        if facts is None:
            continue

        def render(spec, s=service):
            return llamacpp.build_args(spec, s.model.spec, "/models/plan.gguf", s.gpu_count, service_key=s.key)

        plan, errors, found = plan_service(
            service.key, service.spec, render, facts, service.profile, service.gpu_count, service.path, estimate
        )
        problems += errors
        warnings += found
        if plan is None:
            continue
        plans[name] = plan
        if plan.mode == "auto":
            services[name] = dataclasses.replace(service, spec=_apply(service, plan, problems))
        else:
            # Recorded so the argument builder knows a plan stands behind these settings (--fit off).
            services[name] = dataclasses.replace(service, spec=service.spec.model_copy(update={"offload": "manual"}))
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(stack, services=services, warnings=tuple(warnings), plans=plans)


def _apply(service: ResolvedService, plan: ServicePlan, problems: list[Problem]):
    """The service's spec with the plan's decision: its offload fields and the host memory request."""
    # Every offload field is the plan's: one the user also set under offload: auto must not survive beside it.
    fields = {
        "moe_cpu_offload": plan.chosen.fields.get("moeCPUOffload"),
        "moe_cpu_layers": plan.chosen.fields.get("moeCPULayers"),
        "no_kv_offload": plan.chosen.fields.get("noKvOffload"),
    }
    resources = service.spec.resources or InferenceResources()
    request = f"{plan.host_memory_request // GiB}Gi"
    if resources.memory is not None and plan.host_memory_request > int(_quantity(resources.memory)):
        problems.append(
            Problem(
                f"{service.path}.resources.memory",
                f"{resources.memory} is below the {request} of system RAM the plan needs "
                f"({plan.chosen.label}); raise it, or leave it unset",
            )
        )
    update = {**fields, "offload": "auto", "resources": resources.model_copy(update={"host_memory": request})}
    return service.spec.model_copy(update=update)


def _quantity(text: str) -> float:
    from ..api import parse_quantity

    return float(parse_quantity(text))
