"""Planning a whole stack: model facts for each model (file, else catalog), a plan per service, then the
services side by side on their profiles' nodes (pool.py).

Runs between resolution and the builders, on a resolved stack, with the metadata reader it is given. For
``offload: auto`` services the plan's decision becomes part of the effective spec (the offload fields and
resources.hostMemory), so both deliveries deploy it: the workloads we render and the custom resources the
operator reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..api import InferenceServiceSpec, ModelSpec, parse_quantity
from ..api.service import OFFLOAD_ALIASES, InferenceResources
from ..errors import ConfigError, Problem, config_path
from ..resolve import ResolvedModel, ResolvedService, ResolvedStack
from ..settings import OFFLINE_ENV
from ..sources import ModelSource, SourceError, is_url, parse_source, sibling_url
from .catalog import CatalogError, catalog_entries, catalog_metadata, recognise, recognise_quantization
from .facts import ModelFacts, ModelFactsError, ProjectorFacts
from .plan import DEFAULT_QUERY, ServicePlan, SpeedQuery, plan_service, request_quantity
from .pool import pool_problems
from .reader import MetadataReader
from .types import GGUFMetadata, MetadataError


@dataclass(frozen=True)
class ModelPlanFacts:
    """What the planner knows of one model: its facts (None: cannot plan) and why they are an estimate."""

    facts: ModelFacts | None
    estimate: str | None = None  # set when the facts come from the catalog, saying why
    mmproj: ProjectorFacts | None = None  # its multimodal projector's, when it has one that could be read

    @property
    def file_bytes(self) -> int:
        """Bytes of the model's tensor data (its files hold at least this much); 0 when unknown."""
        return self.facts.file_bytes if self.facts is not None else 0


@dataclass(frozen=True)
class PlannedStack:
    """A resolved stack after planning: effective specs with the auto decisions, a plan per service."""

    stack: ResolvedStack  # services carry the planned specs; warnings include the planner's
    plans: dict[str, ServicePlan] = field(default_factory=dict)  # by service Kubernetes name
    models: dict[str, ModelPlanFacts] = field(default_factory=dict)  # by model Kubernetes name
    problems: tuple[Problem, ...] = ()  # what does not fit, with the numbers: the caller reports them


def model_facts(model: ResolvedModel, read: MetadataReader) -> tuple[ModelPlanFacts, list[Problem]]:
    """The model's facts, whether they are a catalog estimate (saying why), and warnings."""
    try:
        source = parse_source(model.spec.source)
    except SourceError:
        return ModelPlanFacts(None), []  # reported by the checks
    why = f"planning offline ({OFFLINE_ENV})"
    if read.can_read(source):
        try:
            return ModelPlanFacts(ModelFacts.from_metadata(read(source, model.spec.files or ()))), []
        except (MetadataError, ModelFactsError) as exc:
            why = f"its metadata could not be read ({exc.message})"
    name = source.file_name
    entry = model.spec.catalog or recognise(name)
    if entry is None:
        warning = Problem(
            model.path,
            f"no plan: {why}, and no catalog entry matches {name!r}; set models.{model.key}.catalog to one of "
            f"{', '.join(sorted(catalog_entries()))} if it is one of them",
        )
        return ModelPlanFacts(None), [warning]
    try:
        meta = catalog_metadata(entry, model.spec.quantization or recognise_quantization(name))
    except CatalogError as exc:
        raise ConfigError.at(config_path(model.path, "catalog"), str(exc)) from None
    return ModelPlanFacts(ModelFacts.from_metadata(meta), f"catalog estimate ({entry}): {why}"), []


def mmproj_facts(model: ResolvedModel, read: MetadataReader) -> tuple[ProjectorFacts | None, list[Problem]]:
    """The facts of the Model's multimodal projector (mmproj), and a warning when it has one the plan cannot
    count: a URL read as itself, a relative path where the downloader fetches it (beside the model's file, in
    its repository or s3 prefix), read like the model."""
    mmproj = model.spec.mmproj
    if mmproj is None:
        return None, []
    location = mmproj if is_url(mmproj) else companion_location(model.spec, mmproj)
    projector, why = _read_companion(location, read, ProjectorFacts.from_metadata)
    if projector is not None:
        return projector, []
    warning = Problem(
        config_path(model.path, "mmproj"),
        f"the multimodal projector is not in the plan: {why}; its weights (about its file size) come on top of the "
        "plan's numbers, on the first GPU unless extraArgs has --no-mmproj-offload: leave that much room (a smaller "
        "contextSize, or a larger reserve in the hardware profile)",
    )
    return None, [warning]


def companion_location(model: ModelSpec, rel: str) -> str:
    """Where the planner reads a file that comes with the model (its mmproj, a draftModel of its files): where the
    downloader gets it, beside the model's file, in its repository or under its s3 prefix."""
    source = parse_source(model.source)
    if source.url is not None:
        return source.file_url(rel, model.files)
    return sibling_url(model.source, rel)  # a node path or a claim's: beside the model's file


F = TypeVar("F")


def _read_companion(location: str, read: MetadataReader, facts_of: Callable[[GGUFMetadata], F]) -> tuple[F | None, str]:
    """The facts of a companion file, or None and why they could not be read."""
    why = f"its metadata cannot be read offline ({OFFLINE_ENV})"
    try:
        source: ModelSource | None = parse_source(location)
    except SourceError as exc:
        source, why = None, str(exc)
    if source is not None and read.can_read(source):
        try:
            return facts_of(read(source)), why
        except (MetadataError, ModelFactsError) as exc:
            why = f"its metadata could not be read ({exc.message})"
    return None, why


def draft_facts(
    service: ResolvedService, models: dict[str, ModelPlanFacts], read: MetadataReader
) -> tuple[ModelFacts | None, list[Problem]]:
    """The facts of a service's draft model (speculativeDecoding), and a warning when it has one the plan
    cannot count: the Model of draftModelRef (already known, by its name), or draftModel, a file beside the
    served model's, read like it."""
    speculative = service.spec.speculative_decoding
    if speculative is None or not speculative.draft_given:
        return None, []
    if service.draft is not None:
        known = models.get(service.draft.name)
        if known is not None and known.facts is not None:
            return known.facts, []
        why = f"the Model {service.draft.key!r} has no plan"
    else:
        assert speculative.draft_model is not None
        location = companion_location(service.model.spec, speculative.draft_model)
        facts, why = _read_companion(location, read, ModelFacts.from_metadata)
        if facts is not None:
            return facts, []
    warning = Problem(
        config_path(service.path, "speculativeDecoding"),
        f"the draft model is not in the plan: {why}; its weights and its KV cache (as large as the model's in "
        "f16) come on top of the plan's numbers",
    )
    return None, [warning]


def plan_stack(stack: ResolvedStack, read: MetadataReader, query: SpeedQuery = DEFAULT_QUERY) -> PlannedStack:
    """The stack with a plan per service and the auto decisions applied, and the problems of those that do not
    fit (returned, not raised, so that the caller reports them together with its own). ``query``: the context
    depth and prompt length of the speed figures."""
    problems: list[Problem] = []
    warnings = list(stack.warnings)
    models: dict[str, ModelPlanFacts] = {}
    for model in stack.models.values():
        known, found = model_facts(model, read)
        warnings += found
        if known.facts is not None:
            mmproj, found = mmproj_facts(model, read)
            known = dataclasses.replace(known, mmproj=mmproj)
            warnings += found
        models[model.name] = known

    plans: dict[str, ServicePlan] = {}
    services: dict[str, ResolvedService] = {}
    for name, service in stack.services.items():
        known = models[service.model.name]
        services[name] = service
        if known.facts is None:
            continue
        draft, found = draft_facts(service, models, read)
        warnings += found
        plan, errors, found = plan_service(
            service.key,
            service.spec,
            service.model.spec,
            known.facts,
            service.profile,
            service.gpu_count,
            service.path,
            known.estimate,
            draft,
            known.mmproj,
            query,
            service.workers,
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
        if service.spec.multi_node is not None:
            # The group as planned: size auto becomes the node count chosen, and the workers' memory requests.
            multi = service.spec.multi_node.model_copy(update={"size": plan.nodes})
            services[name] = dataclasses.replace(
                services[name],
                spec=services[name].spec.model_copy(update={"multi_node": multi}),
                worker_host_memory=plan.worker_host_memory(),
            )
        if service.router_models:
            found, spec = router_model_problems(services[name], models)
            problems += found
            services[name] = dataclasses.replace(services[name], spec=spec)
    planned = dataclasses.replace(stack, services=services, warnings=tuple(warnings))
    # The services side by side: every replica on its profile's nodes (planner/pool.py), judged on the planned
    # specs (the auto decisions' host memory requests). A service with errors of its own leaves its pool unjudged.
    failed = {name for name, s in services.items() if any(_within(p.path, s.path) for p in problems)}
    errors, found = pool_problems(planned, plans, failed)
    problems += errors
    planned = dataclasses.replace(planned, warnings=(*planned.warnings, *found))
    return PlannedStack(planned, plans, models, tuple(problems))


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((f"{prefix}.", f"{prefix}["))


def router_model_problems(
    service: ResolvedService, models: dict[str, ModelPlanFacts]
) -> tuple[list[Problem], InferenceServiceSpec]:
    """routerModels that do not fit the profile on their own, and the service's spec with a host memory request
    that holds the largest of them (offload: auto).

    Each routed model is planned as if modelRef were it, with the flags the router passes on to every model
    instance (the service's, the plan's offload decision included: ``service`` is the planned one) and one
    model loaded at a time (--models-max 1). The service's own plan stays the modelRef model's; a routed model
    without facts was reported by model_facts already."""
    problems: list[Problem] = []
    spec = service.spec
    auto = spec.offload == "auto"
    resources = spec.resources or InferenceResources()
    # As rendered: the offload fields as the plan decided them, checked rather than searched again. Under
    # offload: auto the host memory request is ours to raise, so it is not checked against.
    trial = spec.model_copy(
        update={
            "offload": "manual",
            **({"resources": resources.model_copy(update={"host_memory": None})} if auto else {}),
        }
    )
    request = int(parse_quantity(resources.host_memory)) if auto and resources.host_memory else 0
    for index, routed in enumerate(service.router_models):
        known = models.get(routed.name)
        if known is None or known.facts is None:
            continue
        where = config_path(service.path, "routerModels", index)
        plan, errors, _ = plan_service(
            service.key,
            trial,
            routed.spec,
            known.facts,
            service.profile,
            service.gpu_count,
            where,
            known.estimate,
            mmproj=known.mmproj,
        )
        for error in errors:
            field = error.path.removeprefix(where).lstrip(".")
            # The router's flags are the service's, the same for every model: what auto would pick for this
            # model alone is a setting of the service's (moeCPULayers, ...), not an offload mode.
            message = error.message.replace(
                "; offload: auto would fit with ", "; it would fit with the service's offload fields set to "
            )
            problems.append(
                Problem(where, f"{routed.key!r}, loaded in place of modelRef: {f'{field} ' if field else ''}{message}")
            )
        if auto and plan is not None and plan.host_memory_request > request:
            request = plan.host_memory_request
            spec = spec.model_copy(
                update={"resources": resources.model_copy(update={"host_memory": request_quantity(request)})}
            )
    return problems, spec


def _apply(service: ResolvedService, plan: ServicePlan, problems: list[Problem]) -> InferenceServiceSpec:
    """The service's spec with the plan's decision: its offload fields and the host memory request."""
    # Every offload field is the plan's: one the user also set under offload: auto must not survive beside it.
    fields = {name: plan.chosen.fields.get(alias) for name, alias in OFFLOAD_ALIASES.items()}
    resources = service.spec.resources or InferenceResources()
    request = request_quantity(plan.host_memory_request)
    if resources.memory is not None and plan.host_memory_request > int(parse_quantity(resources.memory)):
        problems.append(
            Problem(
                f"{service.path}.resources.memory",
                f"{resources.memory} is below the {request} of system RAM the plan needs "
                f"({plan.chosen.label}); raise it, or leave it unset",
            )
        )
    update = {**fields, "offload": "auto", "resources": resources.model_copy(update={"host_memory": request})}
    return service.spec.model_copy(update=update)
