"""Stack config -> what each service really gets: names, its hardware profile, and the profile's defaults.

This is the one place where a service meets its hardware. Everything after it (checks, planner, argument
builder, workload builders, custom resources) reads the *effective* specs made here, so the profile's GPU
count, image, node selector and tolerations reach both deliveries the same way, and explicit service fields
always win. Pure: no planner, no builder, no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal, TypeVar

from pydantic import ValidationError

from .api import InferenceServiceSpec, ModelSpec, StackConfig, Toleration
from .api.base import format_bytes, name_problem, normalize_name, parse_quantity, suggest
from .api.model import HardwareSpec
from .api.service import (
    API_KEY_SECRET_SUFFIX,
    DEFAULT_REPLICAS,
    DEFAULT_RUNTIME,
    LLAMACPP_RUNTIMES,
    ApiKeySpec,
    InferenceResources,
    offload_fields,
)
from .api.stack import CacheMode, Delivery
from .api.validation import problems_from_validation_error
from .errors import ConfigError, Problem, config_path
from .flags import ROUTER_RUNTIME
from .hardware import HardwareProfile, resolve_profile
from .hardware.profile import VENDOR_DEFAULTS, is_published_image
from .sources import SourceError, on_node, parse_source

T = TypeVar("T")

# A memory figure below this is almost surely a missing suffix ("48" is 48 bytes, not 48Gi).
_SMALLEST_SENSIBLE_MEMORY = Decimal(2**20)


@dataclass(frozen=True)
class ResolvedModel:
    key: str  # the key under llmkube:models
    name: str  # the Kubernetes name
    spec: ModelSpec  # with hardware filled in from the profile of the services that use it

    @property
    def path(self) -> str:
        return config_path("models", self.key)


@dataclass(frozen=True)
class ResolvedService:
    key: str  # the key under llmkube:services
    name: str  # the Kubernetes name
    namespace: str
    spec: InferenceServiceSpec  # effective: modelRef normalised, profile defaults applied
    model: ResolvedModel
    profile: HardwareProfile
    managed_api_key: bool = False  # the key is Pulumi's (llmkube:apiKeys): the service's own Secret holds it
    draft: ResolvedModel | None = None  # speculativeDecoding.draftModelRef's model, staged beside the served one
    router_models: tuple[ResolvedModel, ...] = ()  # routerModels' models, in order, staged beside the served one
    # The node's profile as selected, before a GPU share (gpu_share_profile) narrowed ``profile`` to the share;
    # None: ``profile`` itself. The pool check (planner/pool.py) places shares onto the node's whole GPUs.
    node_profile: HardwareProfile | None = None
    # multiNode: the hardware of ranks 1.. up to the largest group the spec allows (a member's hardwareProfile,
    # else the service's node); empty for a single-node service.
    workers: tuple[HardwareProfile, ...] = ()
    # Set by the planner: the host memory each worker (ranks 1..size-1) needs, in bytes (a CPU worker holds its
    # layers in RAM); empty before planning.
    worker_host_memory: tuple[int, ...] = ()

    @property
    def path(self) -> str:
        return config_path("services", self.key)

    @property
    def group_size(self) -> int | None:
        """The nodes of a multi-node service once known (a count, or auto decided by the planner), else None."""
        multi = self.spec.multi_node
        return multi.size if multi is not None and isinstance(multi.size, int) else None

    @property
    def device_count(self) -> int:
        """Devices llama-server splits the model over: the workers' (each GPU of a worker, or its CPU when it has
        none: ggml-rpc-server then serves the CPU backend as one device), then its own GPUs."""
        return sum(remote_devices(p) for p in self.worker_profiles) + self.gpu_count

    @property
    def worker_profiles(self) -> tuple[HardwareProfile, ...]:
        """The hardware of the workers the service runs with (ranks 1..size-1); none until the size is known."""
        size = self.group_size
        return self.workers[: size - 1] if size else ()

    @property
    def node(self) -> HardwareProfile:
        """The profile of the node the service runs on: its whole GPUs, even when it has a share of one."""
        return self.node_profile if self.node_profile is not None else self.profile

    @property
    def gpu_count(self) -> int:
        return (self.spec.resources.gpu if self.spec.resources else None) or 0


def remote_devices(profile: HardwareProfile) -> int:
    """Devices a worker on this hardware serves: every GPU, or one CPU device without GPUs (tools/rpc)."""
    return profile.gpu_count or 1


@dataclass(frozen=True)
class ResolvedStack:
    config: StackConfig
    profile: HardwareProfile
    models: dict[str, ResolvedModel]  # by Kubernetes name
    services: dict[str, ResolvedService]  # by Kubernetes name
    warnings: tuple[Problem, ...] = field(default=())

    @property
    def namespace(self) -> str:
        return self.config.namespace

    @property
    def delivery(self) -> Delivery:
        return self.config.delivery


def validate_stack(raw: Mapping[str, Any]) -> StackConfig:
    """The typed stack config; ConfigError naming every problem pydantic finds, at its config path."""
    try:
        return StackConfig.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(problems_from_validation_error(exc, "")) from None


def resolve_stack(config: StackConfig) -> ResolvedStack:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    model_names = _names(config.models, "models", problems)
    service_names = _names(config.services, "services", problems)
    stack_profile = _collect(problems, lambda: resolve_profile(config.hardware, "hardware"))

    if config.delivery == "operator" and config.operator.install and config.operator.namespace == config.namespace:
        problems.append(
            Problem(
                "operator.namespace",
                f"{config.namespace!r} is also llmkube:namespace; the controller and the inference pods need "
                "different Pod Security levels, so give the operator its own namespace (default llmkube-system)",
            )
        )
    by_model_name = {name: key for key, name in model_names.items()}
    services: dict[str, ResolvedService] = {}
    model_hardware: dict[str, list[tuple[str, HardwareSpec]]] = {}
    for key, spec in config.services.items():
        path = config_path("services", key)
        model_key = by_model_name.get(normalize_name(spec.model_ref))
        if model_key is None:
            known = sorted(config.models)
            hints = suggest(spec.model_ref, known)
            hint = f"did you mean {' or '.join(hints)}?" if hints else f"models are: {', '.join(known) or 'none'}"
            problems.append(Problem(f"{path}.modelRef", f"{spec.model_ref!r} names no model; {hint}"))
            continue
        if spec.hardware_profile is not None:
            choice = functools.partial(resolve_profile, spec.hardware_profile, f"{path}.hardwareProfile")
            profile = _collect(problems, choice)
        else:
            profile = stack_profile
        if profile is None:
            continue
        model_spec = config.models[model_key]
        node_profile = profile
        profile = gpu_share_profile(profile, spec)
        effective, gpus = _apply_profile(spec, model_spec, profile, model_names[model_key], path, problems)
        name = service_names.get(key, key)
        managed = key in config.api_keys
        if managed:
            if effective.api_key is not None:
                problems.append(
                    Problem(
                        config_path("apiKeys", key),
                        f"{key} also names an existing Secret (services.{key}.apiKey); give its key one way",
                    )
                )
            effective = effective.model_copy(
                update={"api_key": ApiKeySpec.model_validate({"secretName": name + API_KEY_SECRET_SUFFIX})}
            )
        problems.extend(_api_key_problems(effective, config.delivery, path, key if managed else None))
        problems.extend(_runtime_problems(effective, config.delivery, path))
        problems.extend(multi_node_problems(effective, config.delivery, path))
        warnings.extend(multi_node_image_warnings(effective, path))
        workers = _worker_profiles(effective, node_profile, path, problems)
        draft_key = _draft_model_key(effective, by_model_name, config, path, problems)
        router_keys = _router_model_keys(effective, model_key, by_model_name, config, path, problems)
        warnings.extend(_offload_warnings(effective, path))
        warnings.extend(_exposure_warnings(effective, path, key))
        warnings.extend(_delivery_warnings(effective, config.delivery, path))
        if effective.autoscaling is not None and effective.replicas is not None:
            warnings.append(
                Problem(
                    f"{path}.replicas",
                    f"{effective.replicas} is not used: with autoscaling the autoscaler sets the replica count "
                    "between autoscaling.minReplicas and maxReplicas",
                )
            )
        if (
            gpus
            and profile.gpu
            and gpus <= profile.gpu.count
            and (model_spec.hardware is None or model_spec.hardware.gpu is None)
        ):
            model_hardware.setdefault(model_key, []).append((key, model_hardware_for(profile, gpus)))
        services[name] = ResolvedService(
            key=key,
            name=name,
            namespace=config.namespace,
            spec=effective,
            model=ResolvedModel(model_key, model_names.get(model_key, model_key), model_spec),
            profile=profile,
            managed_api_key=managed,
            draft=ResolvedModel(draft_key, model_names[draft_key], config.models[draft_key]) if draft_key else None,
            router_models=tuple(ResolvedModel(k, model_names[k], config.models[k]) for k in router_keys),
            node_profile=node_profile if node_profile is not profile else None,
            workers=workers,
        )
    for key in config.api_keys:
        if key not in config.services:
            names = ", ".join(sorted(config.services)) or "none"
            problems.append(Problem(config_path("apiKeys", key), f"{key!r} names no service; services are: {names}"))

    models = {
        name: ResolvedModel(key, name, _model_with_hardware(key, config.models[key], model_hardware, problems))
        for key, name in model_names.items()
    }
    if problems or stack_profile is None:
        raise ConfigError(problems)
    warnings.extend(_host_path_warnings(config))
    warnings.extend(_metal_only_warnings(config))
    warnings.extend(_integrity_warnings(config))
    warnings.extend(_refresh_warnings(config))
    warnings.extend(_observability_warnings(config))
    # Services point at the final models (with the hardware the profiles filled in).
    services = {
        name: ResolvedService(
            s.key,
            s.name,
            s.namespace,
            s.spec,
            models[s.model.name],
            s.profile,
            s.managed_api_key,
            models[s.draft.name] if s.draft else None,
            tuple(models[m.name] for m in s.router_models),
            s.node_profile,
            s.workers,
            s.worker_host_memory,
        )
        for name, s in services.items()
    }
    return ResolvedStack(config, stack_profile, models, services, tuple(warnings))


def gpu_share_profile(profile: HardwareProfile, spec: InferenceServiceSpec) -> HardwareProfile:
    """The profile a service is planned on when it has a share of a GPU, not a whole one: a MIG partition's
    memory (the GB of its profile name, e.g. 3g.40gb), or a shared GPU's memoryLimitGiB, when less than the GPU's.
    """
    sharing = (spec.resources or InferenceResources()).gpu_sharing
    if profile.gpu is None or sharing is None:
        return profile
    share: Decimal | None = None
    mig = MIG_MEMORY.match(sharing.profile or "") if sharing.mode == "partitioned" else None
    if mig is not None:
        share = Decimal(mig.group(1)) * 10**9
    elif sharing.mode == "shared" and sharing.memory_limit_gi_b is not None:
        share = Decimal(sharing.memory_limit_gi_b) * 2**30
    if share is None or share >= parse_quantity(profile.gpu.memory):
        return profile
    gpu = profile.gpu.model_copy(update={"memory": str(int(share))})
    return profile.model_copy(update={"gpu": gpu})


# A MIG profile's memory: 3g.40gb is 40 GB (NVIDIA's names are decimal gigabytes, rounded).
MIG_MEMORY: Final = re.compile(r"^[0-9]+g\.([0-9]+)gb$")


def _runtime_problems(spec: InferenceServiceSpec, delivery: Delivery, path: str) -> list[Problem]:
    """A runtime delivery direct cannot render: it renders llama.cpp's llama-server only."""
    runtime = spec.runtime or DEFAULT_RUNTIME
    if delivery == "direct" and runtime not in LLAMACPP_RUNTIMES:
        return [
            Problem(
                f"{path}.runtime",
                f"delivery direct renders llama.cpp only; use delivery operator for runtime {runtime}",
            )
        ]
    return []


def multi_node_problems(spec: InferenceServiceSpec, delivery: Delivery, path: str) -> list[Problem]:
    """What a multi-node group cannot be combined with: one llama-server holds the group's ggml-rpc-servers (each
    serves one client at a time), so one replica; the LLMKube operator runs multiNode for vLLM only."""
    multi = spec.multi_node
    if multi is None:
        return []
    at = config_path(path, "multiNode")
    if delivery == "operator":
        return [
            Problem(
                at,
                "delivery operator cannot serve it: the LLMKube operator's multiNode runs vLLM only (llama.cpp RPC "
                "members are an open request upstream, LLMKube #1753); use delivery direct",
            )
        ]
    out: list[Problem] = []
    runtime = spec.runtime or DEFAULT_RUNTIME
    if runtime != "llamacpp":
        out.append(Problem(at, f"runtime {runtime} cannot use it; multiNode serves one model with runtime llamacpp"))
    replicas = spec.replicas if spec.replicas is not None else DEFAULT_REPLICAS
    if spec.autoscaling is not None or replicas > 1:
        what = "autoscaling" if spec.autoscaling is not None else f"replicas {replicas}"
        out.append(
            Problem(
                at,
                f"{what}: a multi-node group is one replica (each worker's ggml-rpc-server serves a single "
                "llama-server); remove it, or serve more replicas as separate services",
            )
        )
    if multi.is_auto and spec.offload_mode == "manual":
        out.append(
            Problem(
                config_path(at, "size"),
                "auto needs offload auto (the planner picks the size with the placement); give a node count, or "
                "leave the placement fields to the planner",
            )
        )
    return out


def multi_node_image_warnings(spec: InferenceServiceSpec, path: str) -> list[Problem]:
    """llama.cpp's published images cannot serve a group: built without -DGGML_RPC, their llama-server refuses
    --rpc ("RPC not supported in this build") and none carries ggml-rpc-server."""
    multi = spec.multi_node
    if multi is None or (isinstance(multi.size, int) and multi.size < 2):
        return []
    out = []
    for key, image in (("image", spec.image), ("multiNode.workerImage", multi.worker_image or spec.image)):
        if image and is_published_image(image):
            out.append(
                Problem(
                    config_path(path, *key.split(".")),
                    f"{image} is one of llama.cpp's published images, built without -DGGML_RPC=ON: "
                    + (
                        "its llama-server refuses --rpc"
                        if key == "image"
                        else "it has no ggml-rpc-server for the workers"
                    )
                    + "; build one image with -DGGML_RPC=ON for both ends (README: Several nodes)",
                )
            )
    return out


def _worker_profiles(
    spec: InferenceServiceSpec, node: HardwareProfile, path: str, problems: list[Problem]
) -> tuple[HardwareProfile, ...]:
    """The hardware of ranks 1.. of a multi-node service: a member's hardwareProfile, else the service's node."""
    multi = spec.multi_node
    if multi is None:
        return ()
    out: list[HardwareProfile] = []
    for rank in range(1, multi.largest):
        member = multi.member(rank)
        if member is None or member.hardware_profile is None:
            out.append(node)
            continue
        index = (multi.members or []).index(member)
        at = config_path(path, "multiNode", "members", index, "hardwareProfile")
        profile = _collect(problems, functools.partial(resolve_profile, member.hardware_profile, at))
        out.append(profile if profile is not None else node)
    return tuple(out)


def _draft_model_key(
    spec: InferenceServiceSpec,
    by_model_name: Mapping[str, str],
    config: StackConfig,
    path: str,
    problems: list[Problem],
) -> str | None:
    """The key of the Model that speculativeDecoding.draftModelRef names, or None when it names none."""
    speculative = spec.speculative_decoding
    if speculative is None or not speculative.draft_model_ref:
        return None
    key = by_model_name.get(normalize_name(speculative.draft_model_ref))
    if key is None:
        known = sorted(config.models)
        hints = suggest(speculative.draft_model_ref, known)
        hint = f"did you mean {' or '.join(hints)}?" if hints else f"models are: {', '.join(known) or 'none'}"
        problems.append(
            Problem(
                f"{path}.speculativeDecoding.draftModelRef",
                f"{speculative.draft_model_ref!r} names no model; {hint}",
            )
        )
    return key


def _router_model_keys(
    spec: InferenceServiceSpec,
    model_key: str,
    by_model_name: Mapping[str, str],
    config: StackConfig,
    path: str,
    problems: list[Problem],
) -> list[str]:
    """The keys of the Models routerModels names, in order; a problem for each entry that cannot be served:
    routerModels without runtime llamacpp-router or under delivery operator (nothing would read it), a key
    that names no model, a model given twice, modelRef's own (the router serves it already)."""
    entries = spec.router_models
    if not entries:
        return []
    where = config_path(path, "routerModels")
    runtime = spec.runtime or DEFAULT_RUNTIME
    if runtime != ROUTER_RUNTIME:
        problems.append(
            Problem(
                where,
                f"{entries!r} needs runtime {ROUTER_RUNTIME}, not {runtime}: only llama-server's router serves "
                f"several models; set runtime: {ROUTER_RUNTIME}, or leave routerModels out",
            )
        )
        return []
    if config.delivery != "direct":
        problems.append(
            Problem(
                where,
                f"{entries!r} needs delivery direct: the LLMKube operator (v0.9.19) has no such field and serves "
                "one model per InferenceService; use llmkube:delivery direct, or one service per model",
            )
        )
        return []
    keys: list[str] = []
    for index, entry in enumerate(entries):
        item = config_path(where, index)
        key = by_model_name.get(normalize_name(entry))
        if key is None:
            known = sorted(config.models)
            hints = suggest(entry, known)
            hint = f"did you mean {' or '.join(hints)}?" if hints else f"models are: {', '.join(known) or 'none'}"
            problems.append(Problem(item, f"{entry!r} names no model; {hint}"))
        elif key == model_key:
            problems.append(
                Problem(item, f"{entry!r} is modelRef, which the router serves already; leave it out of routerModels")
            )
        elif key in keys:
            problems.append(Problem(item, f"{entry!r} is given twice; name each model once"))
        else:
            keys.append(key)
    return keys


def _collect(problems: list[Problem], thunk: Callable[[], T]) -> T | None:
    try:
        return thunk()
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None


def _names(entries: Mapping[str, Any], section: str, problems: list[Problem]) -> dict[str, str]:
    """Config key -> Kubernetes name, with a problem for each key that cannot be one or collides."""
    names: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key in entries:
        why = name_problem(key)
        if why:
            problems.append(Problem(config_path(section, key), why))
            continue
        name = normalize_name(key)
        if name in seen:
            problems.append(
                Problem(
                    config_path(section, key),
                    f"{key!r} and {seen[name]!r} both become the Kubernetes name {name!r}; rename one",
                )
            )
            continue
        seen[name] = key
        names[key] = name
    return names


def _apply_profile(
    spec: InferenceServiceSpec,
    model: ModelSpec,
    profile: HardwareProfile,
    model_name: str,
    path: str,
    problems: list[Problem],
) -> tuple[InferenceServiceSpec, int]:
    resources = spec.resources or InferenceResources()
    gpus = _gpu_count(spec, model, profile)
    available = profile.gpu.count if profile.gpu else 0
    if gpus > available:
        has = _count(available, "GPU") if available else "no GPUs"
        # Report the field the count came from: the service's own, or the Model's it inherited.
        where = f"{path}.resources.gpu"
        if resources.gpu is None and model.hardware and model.hardware.gpu and model.hardware.gpu.count:
            where = f"models.{spec.model_ref}.hardware.gpu.count"
        problems.append(
            Problem(
                where,
                f"{_count(gpus, 'GPU')} requested, but the hardware profile {profile.name} has {has}; "
                f"ask for at most {available} or pick a profile with more",
            )
        )
    _check_memory(resources, profile, path, problems)
    if resources.cpu is not None and parse_quantity(resources.cpu) > profile.cpu_cores:
        problems.append(
            Problem(
                f"{path}.resources.cpu",
                f"{resources.cpu} CPUs requested, but the hardware profile {profile.name} has "
                f"{_count(profile.cpu_cores, 'core')}; the pod would never be scheduled",
            )
        )

    update: dict[str, Any] = {"model_ref": model_name}
    if gpus and resources.gpu is None:
        update["resources"] = resources.model_copy(update={"gpu": gpus})
    if spec.image is None:
        update["image"] = profile.image
    node_selector = {**profile.node_selector, **(spec.node_selector or {})}
    if node_selector:
        update["node_selector"] = dict(sorted(node_selector.items()))
    # The profile pins every service to its nodes (node selector), so every service must tolerate their
    # taints, with or without GPUs: a CPU-only pod pinned to a tainted GPU node would never be scheduled.
    tolerations = _merge_tolerations(profile.tolerations, spec.tolerations or [])
    if tolerations:
        update["tolerations"] = tolerations
    return spec.model_copy(update=update), gpus


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _gpu_count(spec: InferenceServiceSpec, model: ModelSpec, profile: HardwareProfile) -> int:
    """Explicit service GPUs, else the Model's GPU count, else every GPU of the profile."""
    if spec.resources is not None and spec.resources.gpu is not None:
        return spec.resources.gpu
    gpu = model.hardware.gpu if model.hardware else None
    if gpu is not None and gpu.enabled is False:
        return 0
    if gpu is not None and gpu.count:
        return gpu.count
    return profile.gpu.count if profile.gpu else 0


def _check_memory(resources: InferenceResources, profile: HardwareProfile, path: str, problems: list[Problem]) -> None:
    for field_name, alias in (("memory", "memory"), ("host_memory", "hostMemory")):
        text = getattr(resources, field_name)
        if text is None:
            continue
        value = parse_quantity(text)
        if value < _SMALLEST_SENSIBLE_MEMORY:
            problems.append(
                Problem(
                    f"{path}.resources.{alias}",
                    f"{text!r} is {value} bytes; memory needs a suffix, e.g. {text}Gi",
                )
            )
            continue
        usable = profile.usable_host_memory
        if value > usable:
            problems.append(
                Problem(
                    f"{path}.resources.{alias}",
                    f"{text} ({format_bytes(value)}) is more than the hardware profile {profile.name} has: "
                    f"{format_bytes(usable)} usable of {format_bytes(parse_quantity(profile.host_memory))} RAM "
                    "after its reserve; lower it or pick a profile with more RAM",
                )
            )


def _merge_tolerations(first: list[Toleration], second: list[Toleration]) -> list[Toleration]:
    merged: list[Toleration] = []
    for t in [*first, *second]:
        if t not in merged:
            merged.append(t)
    return merged


def _observability_warnings(config: StackConfig) -> list[Problem]:
    """What llmkube:observability renders that will not do what it says on its own: an autoscaler fed from
    Prometheus while nothing here has the pods scraped, an autoscaler with nothing to scale, and scale to zero
    on series that only running pods export."""
    settings = config.observability
    out: list[Problem] = []
    scaled = {key: s for key, s in config.services.items() if s.autoscaling is not None}
    if settings.autoscaler != "hpa" and not scaled:
        out.append(
            Problem(
                config_path("observability", "autoscaler"),
                f"{settings.autoscaler!r}, but no service has autoscaling: nothing is rendered for it",
            )
        )
    custom = sorted(key for key, s in scaled.items() if _custom_metric_names(s))
    if settings.autoscaler == "prometheusAdapter" and scaled and not custom:
        out.append(
            Problem(
                config_path("observability", "autoscaler"),
                "'prometheusAdapter', but every service's autoscaling follows Resource metrics (cpu, memory), which "
                "metrics-server serves: no adapter rules are rendered",
            )
        )
    if settings.autoscaler == "hpa" and custom:
        out.append(
            Problem(
                config_path("observability", "autoscaler"),
                f"'hpa', and the HPAs of {', '.join(custom)} follow custom metrics "
                f"({', '.join(sorted({n for k in custom for n in _custom_metric_names(scaled[k])}))}), which the "
                "HPA gets only from a custom-metrics adapter that serves them from Prometheus: without one it never "
                "scales. Set prometheusAdapter (rules for prometheus-adapter) or keda, unless your cluster's "
                "adapter serves them already",
            )
        )
    if settings.autoscaler != "hpa" and scaled and not settings.scraped:
        out.append(
            Problem(
                config_path("observability", "autoscaler"),
                f"{settings.autoscaler!r} reads the llamacpp:* series from Prometheus, but nothing here has the pods "
                "scraped: set podMonitor, serviceMonitor or scrapeAnnotations, or make sure your Prometheus "
                "scrapes them with the service and namespace labels",
            )
        )
    for key, service in scaled.items():
        autoscaling = service.autoscaling
        if autoscaling is None or autoscaling.min_replicas != 0 or settings.autoscaler != "keda":
            continue
        if key in (settings.wake_queries or {}):
            continue
        out.append(
            Problem(
                config_path("services", key, "autoscaling", "minReplicas"),
                "0: at zero replicas no llama-server exports llamacpp:* series, so KEDA's triggers read 0 and "
                "nothing wakes the service; requests fail until it is scaled up by hand (kubectl scale) or by "
                f"observability.wakeQueries.{key}, a query that sees demand outside the pods (its gateway route's "
                "request rate)",
            )
        )
    return out


def _custom_metric_names(spec: InferenceServiceSpec) -> list[str]:
    """The Pods (custom) metrics a service's HPA would follow: the operator's default when none are given."""
    return [m.name for m in spec.autoscaling_metrics() if m.type == "Pods"]


def _integrity_warnings(config: StackConfig) -> list[Problem]:
    """Model files that arrive unverified: over plain http without a sha256, or left out of a model's pins."""
    out: list[Problem] = []
    for key, model in config.models.items():
        try:
            source = parse_source(model.source)
        except SourceError:
            continue  # reported by the checks
        if source.scheme == "http" and not model.sha256:
            out.append(
                Problem(
                    config_path("models", key, "source"),
                    f"{model.source!r} is fetched over plain http and no sha256 pins it: anyone on the network "
                    f"path can swap the model; use https://, or set models.{key}.sha256",
                )
            )
        if source.scheme == "pvc" or not (model.sha256 or model.file_sha256):
            continue  # a claim's files are served as they are, never downloaded
        checked = {source.file_name: model.sha256}
        if config.delivery == "direct":  # the operator reads sha256 only: fileSha256 is left out of its resource
            checked.update(model.file_sha256 or {})
        unverified = [name for name in [source.file_name, *(model.files or [])] if not checked.get(name)]
        if not unverified:
            continue
        how = (
            f"give their digests in models.{key}.fileSha256 (further files) or models.{key}.sha256 (the model file)"
            if config.delivery == "direct"
            else "the LLMKube operator checks only sha256, the model file's; delivery direct checks every file"
        )
        out.append(
            Problem(
                config_path("models", key, "sha256" if unverified == [source.file_name] else "files"),
                f"{', '.join(unverified)} would be downloaded unverified, though the model gives sha256 digests; "
                + how,
            )
        )
    return out


def _refresh_warnings(config: StackConfig) -> list[Problem]:
    """refreshPolicy OnChange where it does nothing: every file pinned by sha256, or nothing downloaded."""
    out: list[Problem] = []
    for key, model in config.models.items():
        if model.refresh_policy != "OnChange":
            continue
        where = config_path("models", key, "refreshPolicy")
        try:
            downloaded = parse_source(model.source).downloaded
        except SourceError:
            continue  # reported by the checks
        if not downloaded:
            out.append(
                Problem(where, "OnChange has no effect: the source is not downloaded, there is no upstream to check")
            )
        elif model.sha256 and all((model.file_sha256 or {}).get(f) for f in model.files or []):
            out.append(
                Problem(
                    where,
                    "OnChange has no effect: sha256 pins the model's files to one content, so a changed upstream "
                    "file could only fail its check; remove refreshPolicy, or the digests to follow upstream",
                )
            )
    return out


def _host_path_warnings(config: StackConfig) -> list[Problem]:
    """Each model from a node path the stack allows (allowHostPath): said at every preview."""
    out: list[Problem] = []
    if not config.allow_host_path:
        return out
    for key, model in config.models.items():
        if on_node(model.source):
            out.append(
                Problem(
                    config_path("models", key, "source"),
                    "a path of the node, mounted as hostPath (allowHostPath): the namespace's Pod Security is "
                    "privileged, so any pod there may mount the node's files",
                )
            )
    return out


def _api_key_problems(spec: InferenceServiceSpec, delivery: Delivery, path: str, managed: str | None) -> list[Problem]:
    """An API key the delivery cannot give the server: the operator (v0.9.19) has no field for one."""
    if spec.api_key is None or delivery != "operator":
        return []
    where = config_path("apiKeys", managed) if managed else config_path(path, "apiKey")
    return [
        Problem(
            where,
            "an API key needs delivery direct: the LLMKube operator (v0.9.19) has no API key field and its "
            "InferenceService cannot mount a Secret; use llmkube:delivery direct, or keep the service in-cluster "
            "(endpoint.type ClusterIP) behind a network policy",
        )
    ]


def _exposure_warnings(spec: InferenceServiceSpec, path: str, key: str) -> list[Problem]:
    """A server reachable from outside the cluster that asks no key."""
    if not spec.exposed or spec.api_key is not None:
        return []
    assert spec.endpoint is not None
    return [
        Problem(
            config_path(path, "endpoint", "type"),
            f"{spec.endpoint.type} without an API key: anyone who reaches it can use the model; set one with "
            f"pulumi config set --secret --path 'llmkube:apiKeys.{key}' KEY, or apiKey.secretName",
        )
    ]


def _delivery_warnings(spec: InferenceServiceSpec, delivery: Delivery, path: str) -> list[Problem]:
    """Fields the delivery takes but does not act on as the spec says: nothing is dropped without a word."""
    out: list[Problem] = []
    resources = spec.resources or InferenceResources()
    if resources.gpu_memory is not None:
        out.append(
            Problem(
                config_path(path, "resources", "gpuMemory"),
                f"{resources.gpu_memory} is not used: neither delivery nor the LLMKube operator reads it; the "
                "planner sizes GPU memory from the model and the hardware profile",
            )
        )
    if delivery == "direct":
        out += _direct_warnings(spec, path)
    else:
        out += _operator_warnings(spec, path)
    return out


def _direct_warnings(spec: InferenceServiceSpec, path: str) -> list[Problem]:
    out: list[Problem] = []
    if spec.args is not None:
        out.append(
            Problem(
                config_path(path, "args"),
                "replaces llama-server's generated arguments entirely: the planner's flags (model path, context, "
                "GPU layers, offload, parallel slots, the API key file, --metrics ...) are not used; prefer "
                "extraArgs, which adds to them",
            )
        )
    if spec.disruption is not None and spec.disruption.protect_always:
        out.append(
            Problem(
                config_path(path, "disruption", "protectAlways"),
                "true renders a PodDisruptionBudget with maxUnavailable 0: a drain of a node running the server "
                "waits until its pod or the budget is deleted by hand",
            )
        )
    sharing = (spec.resources or InferenceResources()).gpu_sharing
    if sharing is not None and sharing.memory_limit_gi_b is not None:
        out.append(
            Problem(
                config_path(path, "resources", "gpuSharing", "memoryLimitGiB"),
                f"{sharing.memory_limit_gi_b} is planned against but not enforced in delivery direct: no CUDA MPS "
                "limit is rendered, so the servers sharing a GPU share its memory unguarded",
            )
        )
    return out


def _operator_warnings(spec: InferenceServiceSpec, path: str) -> list[Problem]:
    """What the LLMKube operator (v0.9.19) does differently for llama.cpp than the field says."""
    out: list[Problem] = []
    runtime = spec.runtime or DEFAULT_RUNTIME

    def warn(where: str, message: str) -> None:
        out.append(Problem(config_path(path, where), message))

    if spec.args is not None and runtime != "generic":
        warn(
            "args",
            f"is ignored by the LLMKube operator for runtime {runtime}: it uses args for runtime generic "
            "only; use extraArgs, or delivery direct",
        )
    contexts = (("podSecurityContext", spec.pod_security_context), ("securityContext", spec.security_context))
    for name, value in contexts:
        if value is not None:
            warn(
                name,
                "replaces the LLMKube operator's defaults wholesale (delivery direct merges it over its "
                "restricted defaults): set every setting the pod needs, seccompProfile and capabilities included",
            )
    if spec.eviction_protection is not None:
        warn(
            "evictionProtection",
            "is used by the LLMKube operator's Metal agent only; in the cluster it changes "
            "nothing (delivery direct sets the autoscalers' do-not-evict annotations)",
        )
    if spec.disruption is not None:
        warn(
            "disruption",
            "makes no PodDisruptionBudget with the LLMKube operator: it only sets "
            "karpenter.sh/do-not-disrupt on the pod (while it starts, or always with protectAlways); delivery "
            "direct renders a budget",
        )
    if spec.container_port is not None and spec.container_port != spec.serving_port:
        warn(
            "containerPort",
            f"{spec.container_port}: the LLMKube operator's Service targets endpoint.port "
            f"({spec.serving_port}), not containerPort, so it would reach no server; set both to the same port",
        )
    if spec.slo is not None:
        warn(
            "slo",
            "is ignored by the operator llmkube installs: the controller renders Pyrra objects only with "
            "--enable-pyrra-slo (and the latency indicator only for vllm); use delivery direct",
        )
    gateway = spec.endpoint.gateway if spec.endpoint else None
    if gateway is not None and gateway.on:
        warn(
            "endpoint.gateway",
            "the LLMKube operator renders Envoy AI Gateway objects (AIGatewayRoute), not an "
            "HTTPRoute, and only where Envoy AI Gateway's CRDs are installed; the operator llmkube installs is not "
            "granted them, so nothing is routed; use delivery direct for a Gateway API HTTPRoute",
        )
    if any("labelSelector" not in c for c in spec.topology_spread_constraints or []):
        warn(
            "topologySpreadConstraints",
            "an entry without labelSelector is passed on as it is by the LLMKube "
            "operator and then counts no pods (delivery direct selects the service's pods); give a labelSelector",
        )
    return out


def _metal_only_warnings(config: StackConfig) -> list[Problem]:
    """Model fields only the LLMKube operator's Metal agent reads (Apple silicon, outside Kubernetes)."""
    out: list[Problem] = []
    for key, model in config.models.items():
        hardware = model.hardware
        if hardware is None or (config.delivery == "operator" and hardware.accelerator == "metal"):
            continue
        for name, value in (("memoryBudget", hardware.memory_budget), ("memoryFraction", hardware.memory_fraction)):
            if value is not None:
                out.append(
                    Problem(
                        config_path("models", key, "hardware", name),
                        f"{value} is not used: only the LLMKube operator's Metal agent reads it (accelerator metal, "
                        "delivery operator); Kubernetes pods are sized by the service's resources",
                    )
                )
    for key, spec in config.services.items():
        for name in OMLX_FIELDS:
            value = getattr(spec, name)
            if value is not None:
                alias = InferenceServiceSpec.model_fields[name].alias or name
                out.append(
                    Problem(
                        config_path("services", key, alias),
                        f"{value!r} is not used: only the oMLX runtime of the LLMKube operator's Metal agent reads "
                        "it (Apple silicon, outside Kubernetes); llama-server has no such setting",
                    )
                )
    return out


# InferenceService fields of the Metal agent's oMLX runtime, by attribute name: no Kubernetes workload reads them.
OMLX_FIELDS = ("turbo_quant_bits", "hot_cache_max_size", "paged_ssd_cache_dir", "paged_ssd_cache_max_size")


def _offload_warnings(spec: InferenceServiceSpec, path: str) -> list[Problem]:
    warnings: list[Problem] = []
    resources = spec.resources or InferenceResources()
    offloads = [alias for alias, value in offload_fields(spec).items() if value]
    if offloads and resources.memory is None and resources.host_memory is None:
        warnings.append(
            Problem(
                path,
                f"{', '.join(offloads)} moves weights or KV cache into system RAM, but neither "
                "resources.hostMemory nor resources.memory is set: the pod may be scheduled where that RAM "
                "is missing and be OOM-killed; set resources.hostMemory",
            )
        )
    if spec.moe_cpu_offload and spec.moe_cpu_layers:
        warnings.append(
            Problem(
                f"{path}.moeCPULayers",
                f"{spec.moe_cpu_layers} has no effect: moeCPUOffload already keeps the experts of every layer "
                "in system RAM; drop one of the two",
            )
        )
    return warnings


def model_hardware_for(profile: HardwareProfile, gpus: int) -> HardwareSpec:
    """The Model hardware section a GPU profile implies (the operator reads vendor and resource name there)."""
    assert profile.gpu is not None  # gpus > 0 was checked against the profile
    gpu = {"enabled": True, "count": gpus, "vendor": profile.gpu.vendor, "resourceName": profile.gpu.resource_name}
    return HardwareSpec.model_validate(
        {
            "accelerator": VENDOR_DEFAULTS[profile.gpu.vendor].accelerator,
            "gpu": {key: value for key, value in gpu.items() if value is not None},
        }
    )


def _model_with_hardware(
    key: str,
    model: ModelSpec,
    filled: dict[str, list[tuple[str, HardwareSpec]]],
    problems: list[Problem],
) -> ModelSpec:
    """A Model used on GPUs without its own gpu section gets one from its services' profile.

    The operator reads the GPU vendor, resource name, layers and sharding from the Model, so a Model shared
    by services on different kinds of GPU cannot be filled in unambiguously: that is a config error.
    """
    uses = filled.get(key)
    if not uses:
        return model
    first_service, hardware = uses[0]
    for other_service, other in uses[1:]:
        if (other.accelerator, other.gpu and other.gpu.vendor) != (
            hardware.accelerator,
            hardware.gpu and hardware.gpu.vendor,
        ):
            problems.append(
                Problem(
                    config_path("models", key, "hardware"),
                    f"services {first_service} and {other_service} use this model on different GPU kinds; "
                    "set models." + key + ".hardware explicitly or give each service its own model",
                )
            )
            return model
    gpu = hardware.gpu
    if model.hardware is not None:
        hardware = model.hardware.model_copy(
            update={"gpu": gpu, "accelerator": model.hardware.accelerator or hardware.accelerator}
        )
    return model.model_copy(update={"hardware": hardware})


CacheKind = Literal["shared", "perService", "claim", "ephemeral", "pvcSource"]


def cache_kind(service: ResolvedService, cache_mode: CacheMode = "shared") -> CacheKind:
    """Where a service keeps its model.

    A pvc:// source is mounted as it is (no cache). Otherwise ``modelCache.claimName`` wins (the user's PVC,
    which we never create), then ``persistence: Ephemeral`` (an emptyDir, downloaded on every start), then the
    namespace-wide ``cache_mode``: one shared PVC (the operator's default) or one PVC per service.
    """
    if parse_source(service.model.spec.source).scheme == "pvc":
        return "pvcSource"
    cache = service.spec.model_cache
    if cache is not None and cache.claim_name:
        return "claim"
    if cache is not None and cache.persistence == "Ephemeral":
        return "ephemeral"
    return cache_mode
