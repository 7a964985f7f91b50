"""Runs the stages in order, for ``Platform`` and for the standalone components alike.

    config (api) -> resolve -> checks -> planner -> checks of the plan -> builders (once per service)

The one module that knows every stage; each stage imports only those before it. The components register
what ``build`` returns and add nothing of their own, so a stack and a standalone component get the same
checks, the same plans and the same manifests.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from . import checks, workloads
from . import operator as operator_install
from .api import ModelSpec, OperatorSettings
from .api.base import normalize_name
from .api.stack import OperatorGrant
from .api.validation import problems_from_validation_error
from .errors import ConfigError, Problem, config_path, raise_if_any
from .flags import operator_extra_args
from .hardware import resolve_profile
from .planner.plan import ServicePlan, SpeedQuery
from .planner.reader import MetadataReader
from .planner.stack import PlannedStack, plan_stack
from .resolve import ResolvedModel, ResolvedService, ResolvedStack, model_hardware_for, resolve_stack, validate_stack
from .settings import Settings

Manifest = dict[str, Any]


@dataclass(frozen=True)
class ModelBuild:
    """A model as the components register it."""

    model: ResolvedModel
    namespace: str
    cache_path: str  # where llama-server finds the file
    custom_resource: Manifest | None  # delivery operator: the Model custom resource
    prefetch_job: Manifest | None = None  # delivery direct, spec.prefetch: the Job that fills the shared cache


@dataclass(frozen=True)
class ServiceBuild:
    """A service as the components register it."""

    service: ResolvedService
    plan: ServicePlan | None
    workloads: list[Manifest]  # the llama.cpp workloads, built once: registered with delivery direct
    custom_resource: Manifest | None  # delivery operator: the InferenceService custom resource
    network_policy: Manifest | None  # who may reach the pods and where they connect (both deliveries)
    server_args: list[str] | None  # delivery direct: the llama-server arguments of the Deployment
    endpoint: str
    base_url: str
    client_config: dict[str, Any]
    # delivery direct: how long Pulumi may wait for the Deployment, its model's download included
    rollout_minutes: int | None = None
    # what the preview warns about the service's pod fields (delivery direct: a weaker securityContext allowed)
    warnings: tuple[Problem, ...] = ()
    # the PriorityClasses its pods name (cluster-scoped, shared; a Platform registers its services' once)
    priority_classes: tuple[Manifest, ...] = ()
    # multiNode (delivery direct): who may reach the workers' ggml-rpc-server (the service's llama-server only)
    worker_network_policy: Manifest | None = None

    @property
    def api_key_secret(self) -> dict[str, str] | None:
        """Where the service's API key is: the Secret and its key, when the server asks for one."""
        key = self.service.spec.api_key
        return None if key is None else {"name": key.secret_name, "key": key.secret_key}


@dataclass(frozen=True)
class OperatorBuild:
    """The LLMKube operator install: its settings, the CRDs, and the controller's objects."""

    settings: OperatorSettings
    crds: list[Manifest]
    manifests: list[Manifest]  # RBAC, the controller Deployment and its metrics Service
    served: dict[str, list[Manifest]]  # rbac namespaced: the controller's Role and RoleBinding, by served namespace


@dataclass(frozen=True)
class StackBuild:
    """A whole stack as the components register it."""

    planned: PlannedStack
    namespace: list[Manifest]  # the Namespace, when the stack creates it
    cache: list[Manifest]  # the shared model cache volume (delivery direct)
    operator: OperatorBuild | None  # the operator to install (delivery operator)
    models: dict[str, ModelBuild]  # by Kubernetes name
    services: dict[str, ServiceBuild]  # by Kubernetes name
    # the PriorityClasses the services' pods name, each once (cluster-scoped: adopted and kept on delete)
    priority_classes: tuple[Manifest, ...] = ()
    # llmkube:observability: the monitors, prometheus-adapter's rules and the Grafana dashboard (after the
    # namespace and the operator); none when it is off
    monitoring: tuple[Manifest, ...] = ()

    @property
    def stack(self) -> ResolvedStack:
        return self.planned.stack


# What the stages see of an API key (llmkube:apiKeys): that there is one. The key itself goes from the
# component's arguments straight into its Secret's data, so no plan, output, error or log can show it.
KEY_GIVEN = "(secret)"


def without_key_values(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The config with each apiKeys value replaced by KEY_GIVEN (a stack file's may be encrypted objects)."""
    keys = raw.get("apiKeys")
    if not isinstance(keys, Mapping):
        return dict(raw)
    return {**raw, "apiKeys": dict.fromkeys(keys, KEY_GIVEN)}


def load(raw: Mapping[str, Any], settings: Settings) -> PlannedStack:
    """Typed, resolved, checked and planned: a ConfigError naming every problem of a stage, or the plans."""
    stack = resolve_stack(validate_stack(without_key_values(raw)))
    raise_if_any(checks.spec_problems(stack))
    query = SpeedQuery(depth=settings.decode_depth, prompt=settings.prompt_tokens)
    planned = plan_stack(stack, MetadataReader.from_settings(settings), query)
    sizes = {name: known.file_bytes for name, known in planned.models.items()}
    raise_if_any(sorted({*planned.problems, *checks.planned_problems(planned.stack, sizes)}))
    return planned


def build(planned: PlannedStack) -> StackBuild:
    """Every manifest of a planned stack; each builder runs once per service."""
    stack = planned.stack
    operator = stack.delivery == "operator"
    services: dict[str, ServiceBuild] = {}
    problems: list[Problem] = []
    for service_name, resolved in stack.services.items():
        try:
            services[service_name] = _service(resolved, planned)
        except ConfigError as error:  # every service's problems, reported at once
            problems += error.problems
    raise_if_any(sorted(set(problems)))
    namespace: list[Manifest] = []
    if stack.config.create_namespace:
        built = [m for s in services.values() for m in s.workloads]
        namespace = workloads.namespace_manifests(stack.namespace, built, delivery=stack.delivery)
    return StackBuild(
        planned=planned,
        namespace=namespace,
        cache=[] if operator else workloads.shared_cache_manifests(stack),
        operator=_operator(stack.config.operator, stack.namespace, needed_grants(stack))
        if operator and stack.config.operator.install
        else None,
        models={name: _model(m, stack) for name, m in stack.models.items()},
        services=services,
        priority_classes=tuple(
            workloads.priority_classes(workloads.priority_level(s, stack.delivery) for s in stack.services.values())
        ),
        monitoring=tuple(monitoring(planned, install_operator=operator and stack.config.operator.install)),
    )


def monitoring(planned: PlannedStack, *, install_operator: bool) -> list[Manifest]:
    """The stack's llmkube:observability objects: its namespace's monitor and prometheus-adapter's rules, the
    controller's monitor and its scraper's binding (an operator the stack installs), and the Grafana dashboard."""
    stack = planned.stack
    settings = stack.config.observability
    services = list(stack.services.values())
    out = workloads.stack_monitoring(stack.namespace, workloads.PORT_NAME, services, settings)
    if install_operator and (settings.pod_monitor or settings.service_monitor):
        out.append(
            workloads.controller_service_monitor(
                stack.config.operator.namespace,
                operator_install.SELECTOR_LABELS,
                operator_install.METRICS_PORT_NAME,
                settings,
            )
        )
        binding = workloads.controller_metrics_binding(operator_install.METRICS_READER_ROLE, settings)
        if binding is not None:
            out.append(binding)
    if settings.dashboard:
        rows = [_dashboard_service(s, planned.plans.get(s.name)) for s in services]
        out.append(workloads.dashboard_config_map(stack.namespace, rows, settings))
    return out


def _dashboard_service(service: ResolvedService, plan: ServicePlan | None) -> workloads.DashboardService:
    """A service's row of the dashboard: one slot's context (the whole context when the slots share one cache)
    and the planner's decode estimate, when it planned the service."""
    if plan is None:
        return workloads.DashboardService(service.name, None, None)
    memory = plan.chosen.memory
    return workloads.DashboardService(
        service.name, memory.context_size // max(memory.kv_streams, 1), plan.chosen.speed.decode_tokens_per_second
    )


def platform(raw: Mapping[str, Any], settings: Settings) -> StackBuild:
    """A stack config (the ``llmkube:`` keys) all the way to its manifests."""
    return build(load(raw, settings))


def _model(model: ResolvedModel, stack: ResolvedStack) -> ModelBuild:
    resource = None
    if stack.delivery == "operator":
        from . import crds  # delivery operator only: kept out of a direct stack's imports

        resource = crds.custom_resource("Model", model.name, stack.namespace, model.spec.wire())
    prefetch = None
    if stack.delivery == "direct" and model.spec.prefetch:
        prefetch = workloads.prefetch_job(model, stack.namespace)
    return ModelBuild(model, stack.namespace, workloads.model_path(model.spec, stack.delivery), resource, prefetch)


def _service(service: ResolvedService, planned: PlannedStack) -> ServiceBuild:
    stack = planned.stack
    built = workloads.service_workloads(
        service, cache=stack.config.model_cache, observability=stack.config.observability
    )
    resource = None
    server_args = None
    rollout = None
    warnings: list[Problem] = []
    if stack.delivery == "direct":
        errors, warnings = workloads.workload_problems(service, cache_mode=stack.config.model_cache.mode)
        raise_if_any(errors)
        warnings += workloads.multi_node_warnings(service, stack.config.network_policy)
    if stack.delivery == "operator":
        # The controller renders its own arguments; the workloads built here only judge the pod (node check,
        # the namespace's Pod Security level).
        from . import crds

        # gpuLayers and tensorSplit have no operator field: they reach the server as extraArgs.
        spec = service.spec.model_copy(update={"extra_args": operator_extra_args(service.spec)})
        resource = crds.custom_resource("InferenceService", service.name, service.namespace, spec.wire())
    else:
        deployment = next(m for m in built if m["kind"] == "Deployment")
        server_args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
        # The planner's size of the models' files (0 when unknown: Pulumi's own wait), when the pod downloads them.
        downloaded = sum(
            known.file_bytes
            for model in (service.model, *service.router_models, *([service.draft] if service.draft else []))
            if (known := planned.models.get(model.name)) is not None and workloads.downloads(model.spec)
        )
        rollout = workloads.rollout_timeout_minutes(downloaded, stack.config.download_mbps)
    return ServiceBuild(
        service=service,
        plan=planned.plans.get(service.name),
        workloads=built,
        custom_resource=resource,
        network_policy=workloads.network_policy(service, stack.config.network_policy),
        server_args=server_args,
        endpoint=workloads.endpoint_url(service),
        base_url=workloads.openai_base_url(service),
        client_config=workloads.client_config(service),
        rollout_minutes=rollout,
        warnings=tuple(warnings),
        priority_classes=tuple(workloads.priority_classes([workloads.priority_level(service, stack.delivery)])),
        worker_network_policy=workloads.worker_network_policy(service, stack.config.network_policy),
    )


def operator(args: Mapping[str, Any]) -> OperatorBuild:
    """The operator install from its settings (the ``llmkube:operator`` keys); ConfigError at ``operator.*``."""
    try:
        settings = OperatorSettings.model_validate(dict(args))
    except ValidationError as exc:
        raise ConfigError(problems_from_validation_error(exc, "operator")) from None
    raise_if_any(checks.served_namespace_problems(settings, stack_namespace=None))
    return _operator(settings, None)


def needed_grants(stack: ResolvedStack) -> list[str]:
    """The operator grants the stack's own Models and InferenceServices use and that a stack adds by itself.

    secretReads is never added: reading every Secret of the cluster is the user's choice (checks.py reports an
    s3:// source whose sourceSecretRef the controller could not read).
    """
    grants = set()
    if any(m.spec.prefetch for m in stack.models.values()):
        grants.add("prefetch")
    if any(s.spec.max_pod_lifetime_seconds for s in stack.services.values()):
        grants.add("podEviction")
    return sorted(grants)


def _operator(settings: OperatorSettings, stack_namespace: str | None, grants: Sequence[str] = ()) -> OperatorBuild:
    """The install; a stack's own namespace is served too (in the settings it registers, so policies see it)."""
    from . import crds

    if grants:
        merged = [g for g in typing.get_args(OperatorGrant) if g in {*(settings.grants or ()), *grants}]
        settings = settings.model_copy(update={"grants": merged})
    if settings.rbac == "namespaced" and stack_namespace is not None:
        served = sorted({*(settings.served_namespaces or ()), stack_namespace})
        settings = settings.model_copy(update={"served_namespaces": served})
    crd_manifests = crds.all_crds() + crds.companion_crds()
    return OperatorBuild(
        settings,
        crd_manifests,
        operator_install.operator_manifests(settings),
        operator_install.served_namespace_manifests(settings),
    )


# --- standalone components --------------------------------------------------------------------------------------


def standalone_model(name: str, args: Mapping[str, Any]) -> ModelBuild:
    """A Model component used on its own: its spec validated and, given a GPU profile, its GPU section filled."""
    config = validate_stack({**_given(args, "namespace", "delivery", "allowHostPath"), "models": {name: args["spec"]}})
    stack = resolve_stack(config)
    model = stack.models[normalize_name(name)]
    problems = checks.model_problems(model) + checks.host_path_problems(model, config.allow_host_path)
    if model.spec.prefetch and config.delivery == "direct":
        problems.append(
            Problem(
                config_path(model.path, "prefetch"),
                "true, but a Model component on its own has no shared model cache to fill (its services keep "
                "their model in volumes of their own); use Platform, or remove prefetch",
            )
        )
    raise_if_any(problems)
    if "hardware" in args:
        model = _with_profile_hardware(model, args["hardware"])
    return _model(model, stack)


def standalone_service(
    name: str, args: Mapping[str, Any], model: ModelBuild, settings: Settings
) -> tuple[ServiceBuild, PlannedStack]:
    """An InferenceService component on a Model component: the Model's typed spec, as it was resolved, is the
    model (catalog and all); without Platform's shared cache the service keeps its model in a volume of its own.
    """
    models: dict[str, ModelSpec] = {model.model.key: model.model.spec}
    raw = {
        "namespace": model.namespace,
        **_given(
            args, "namespace", "delivery", "hardware", "allowHostPath", "apiKeys", "downloadMbps", "networkPolicy"
        ),
        "modelCache": {"mode": "perService"},
        "models": models,
        "services": {name: args["spec"]},
    }
    planned = load(raw, settings)
    key = normalize_name(name)
    return _service(planned.stack.services[key], planned), planned


def _given(args: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    # Only what the caller gave: StackConfig is the one home of every default.
    return {key: args[key] for key in keys if key in args}


def _with_profile_hardware(model: ResolvedModel, hardware: str | dict[str, Any]) -> ResolvedModel:
    """A standalone Model on a GPU profile gets the GPU section Platform would give it from its services."""
    profile = resolve_profile(hardware, "hardware")
    if profile.gpu is None or (model.spec.hardware is not None and model.spec.hardware.gpu is not None):
        return model
    spec = model.spec.model_copy(update={"hardware": model_hardware_for(profile, profile.gpu.count)})
    return ResolvedModel(model.key, model.name, spec)
