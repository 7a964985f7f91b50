"""Pulumi components: thin shells that register what the pure builders return.

Arguments are plain typed dicts with the LLMKube JSON names, so that these components can later be served
to other Pulumi languages as a component provider; the pydantic API validates them inside. A bad argument
raises ConfigError, which Pulumi prints as one clean message (no stack trace) and which fails the preview.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, NotRequired, Required, TypedDict

import pulumi
from pydantic import ValidationError

from . import cluster, crds, operator, workloads
from .api import ModelSpec, OperatorSettings
from .api.base import normalize_name
from .api.stack import Delivery
from .api.validation import problems_from_validation_error
from .errors import ConfigError, Problem
from .hardware import resolve_profile
from .register import register, resource_names
from .resolve import ResolvedModel, ResolvedService, ResolvedStack, load_stack, model_hardware_for

API_VERSION = f"{crds.GROUP}/{crds.VERSION}"


class OperatorArgs(TypedDict, total=False):
    """LLMKube operator install settings (the ``llmkube:operator`` config)."""

    version: str
    namespace: str
    image: str
    install: bool
    resources: dict[str, str]


class ModelArgs(TypedDict):
    spec: Required[dict[str, Any]]  # an LLMKube Model spec (JSON names)
    namespace: NotRequired[str]
    delivery: NotRequired[Delivery]
    hardware: NotRequired[str | dict[str, Any]]  # fills the spec's GPU section when it has none


class InferenceServiceArgs(TypedDict):
    spec: Required[dict[str, Any]]  # an LLMKube InferenceService spec (JSON names)
    model: Required[Model]
    namespace: NotRequired[str]
    delivery: NotRequired[Delivery]
    hardware: NotRequired[str | dict[str, Any]]  # a hardware profile name or {extends: ..., ...}


class PlatformArgs(TypedDict, total=False):
    """A whole stack: the keys of the ``llmkube:`` config namespace (StackConfig; a test keeps them equal)."""

    delivery: Delivery
    namespace: str
    createNamespace: bool
    hardware: str | dict[str, Any]
    operator: OperatorArgs
    modelCache: dict[str, str]
    models: dict[str, dict[str, Any]]
    services: dict[str, dict[str, Any]]


def _child(parent: pulumi.Resource, opts: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=parent), opts)


def _register_all(prefix: str, manifests: list[dict[str, Any]], opts: pulumi.ResourceOptions) -> list[Any]:
    return [register(n, m, opts) for n, m in zip(resource_names(prefix, manifests), manifests, strict=True)]


# Retained objects outlive the stack; the next stack to deploy them (after a destroy, or with the other
# delivery) adopts them, taking over the fields its own Pulumi field manager did not write.
PATCH_FORCE = "pulumi.com/patchForce"


def _annotated(manifests: list[dict[str, Any]], key: str, kinds: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The manifests (those of ``kinds`` only, when given) with the Pulumi annotation ``key`` set to "true"."""
    out = []
    for manifest in manifests:
        if not kinds or manifest["kind"] in kinds:
            metadata = manifest["metadata"]
            annotations = dict(sorted({**metadata.get("annotations", {}), key: "true"}.items()))
            manifest = {**manifest, "metadata": {**metadata, "annotations": annotations}}
        out.append(manifest)
    return out


def _given(args: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    # Only what the caller gave: StackConfig is the one home of every default.
    return {key: args[key] for key in keys if key in args}


class Operator(pulumi.ComponentResource):
    """The LLMKube operator: its CRDs, RBAC, controller Deployment and metrics Service."""

    namespace: str
    image: str

    def __init__(self, name: str, args: OperatorArgs | None = None, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llmkube:index:Operator", name, {}, opts)
        settings = _validate_operator(dict(args or {}))
        child = _child(self)
        self.crds = _register_all(f"{name}-crd", crds.all_crds() + crds.companion_crds(), child)
        # The controller starts only once the kinds it watches exist.
        after_crds = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=self.crds))
        self.resources = _register_all(name, operator.operator_manifests(settings), after_crds)
        self.namespace = settings.namespace
        self.image = settings.image_ref
        self.register_outputs({"namespace": self.namespace, "image": self.image})


def _validate_operator(args: dict[str, Any]) -> OperatorSettings:
    try:
        return OperatorSettings.model_validate(args)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation_error(exc, "operator")) from None


class Model(pulumi.ComponentResource):
    """A model file. Delivery operator: a Model custom resource. Direct: the services' init containers fetch it."""

    name: str
    spec: ModelSpec
    cache_path: str

    def __init__(
        self,
        name: str,
        args: ModelArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        _resolved: tuple[ResolvedModel, ResolvedStack] | None = None,
    ):
        super().__init__("llmkube:index:Model", name, {}, opts)
        if _resolved is None:
            stack = load_stack({**_given(args, "namespace", "delivery"), "models": {name: args["spec"]}})
            model = stack.models[normalize_name(name)]
            if "hardware" in args:
                model = _with_profile_hardware(model, args["hardware"])
        else:
            model, stack = _resolved
        self.key = model.key
        self.name = model.name
        self.spec = model.spec
        self.namespace = stack.namespace
        self.cache_path = workloads.model_path(model.spec, model.path)
        self.custom_resource = None
        if stack.delivery == "operator":
            self.custom_resource = register(
                f"{name}-model", custom_resource("Model", model.name, stack.namespace, model.spec.wire()), _child(self)
            )
        self.register_outputs({"name": self.name, "cachePath": self.cache_path})


def _with_profile_hardware(model: ResolvedModel, hardware: str | dict[str, Any]) -> ResolvedModel:
    """A standalone Model on a GPU profile gets the GPU section Platform would give it from its services."""
    profile = resolve_profile(hardware, "hardware")
    if profile.gpu is None or (model.spec.hardware is not None and model.spec.hardware.gpu is not None):
        return model
    spec = model.spec.model_copy(update={"hardware": model_hardware_for(profile, profile.gpu.count)})
    return ResolvedModel(model.key, model.name, spec)


class InferenceService(pulumi.ComponentResource):
    """One llama.cpp server. Delivery operator: an InferenceService custom resource. Direct: its workloads.

    Used on its own (not through Platform), a direct-delivery service keeps its model in a cache volume of
    its own, since no shared one is there; Platform gives all its services the namespace's shared cache.
    """

    endpoint: str
    base_url: str
    client_config: dict[str, Any]
    server_args: list[str] | None
    plan: dict[str, Any] | None  # the planner's placement, memory per device and throughput estimate

    def __init__(
        self,
        name: str,
        args: InferenceServiceArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        _resolved: tuple[ResolvedService, ResolvedStack] | None = None,
        _cluster: ClusterView | None = None,
    ):
        super().__init__("llmkube:index:InferenceService", name, {}, opts)
        if _resolved is None:
            model: Model = args["model"]
            stack = load_stack(
                {
                    "namespace": model.namespace,
                    **_given(args, "namespace", "delivery", "hardware"),
                    "modelCache": {"mode": "perService"},
                    "models": {model.key: model.spec.wire()},
                    "services": {name: args["spec"]},
                }
            )
            for warning in stack.warnings:
                pulumi.log.warn(str(warning), resource=self)
            service = stack.services[normalize_name(name)]
        else:
            service, stack = _resolved
        child = _child(self)
        self.server_args = None
        mode = stack.config.model_cache.mode
        manifests = workloads.service_workloads(service, cache_mode=mode)
        placed = None if _cluster is None else scheduling(service, manifests, _cluster, self)
        self.scheduling = placed.text if placed is not None else None
        if stack.delivery == "operator":
            cr = custom_resource("InferenceService", service.name, service.namespace, service.spec.wire())
            self.resources = [register(f"{name}-isvc", cr, child)]
        else:
            if placed is not None and placed.pending:
                # A Deployment no node can run never becomes available, nor its Service's endpoints ready:
                # Pulumi would wait out its timeout and fail the update. The rest is still awaited.
                manifests = _annotated(manifests, SKIP_AWAIT, ("Deployment", "Service"))
            self.resources = _register_all(name, manifests, child)
            # In delivery operator the controller renders its own arguments; only direct knows them exactly.
            self.server_args = workloads.server_args_for(service)
        self.service_name = service.name
        plan = stack.plans.get(service.name)
        self.plan = plan.output() if plan is not None else None
        if plan is not None:
            pulumi.log.info(plan.table(), resource=self)
        self.endpoint = workloads.endpoint_url(service)
        self.base_url = workloads.openai_base_url(service)
        self.client_config = client_config(service, self.base_url)
        self.register_outputs(self.outputs())

    def outputs(self) -> dict[str, Any]:
        out = {"endpoint": self.endpoint, "baseUrl": self.base_url, "clientConfig": self.client_config}
        if self.server_args is not None:
            out["serverArgs"] = self.server_args
        if self.plan is not None:
            out["plan"] = self.plan
        if self.scheduling is not None:
            out["scheduling"] = self.scheduling
        return out


class Platform(pulumi.ComponentResource):
    """A whole stack: namespace, model cache, operator (delivery operator), models and services."""

    services: dict[str, dict[str, Any]]
    namespace: str
    delivery: str

    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llmkube:index:Platform", name, {}, opts)
        stack = load_stack(dict(args))
        for warning in stack.warnings:
            pulumi.log.warn(str(warning), resource=self)
        child = _child(self)
        view = cluster_view(stack, self, opts)

        cache: list[dict[str, Any]] = []
        if stack.delivery == "direct":
            settings = stack.config.model_cache
            cache = workloads.shared_cache_manifests(
                stack,
                cache_mode=settings.mode,
                size=settings.size,
                storage_class=settings.storage_class,
                access_mode=settings.access_mode,
            )
        # The shared model cache outlives every service and the stack itself: re-downloading tens of
        # gigabytes because a service was renamed is the failure this prevents. Its namespace is kept with
        # it, since deleting a namespace deletes the volumes in it, in both deliveries: the operator keeps
        # its downloads in the namespace too, and a namespace adopted from an earlier direct stack may
        # still hold our cache.
        keep = pulumi.ResourceOptions(retain_on_delete=True)

        foundation: list[pulumi.Resource] = []
        if stack.config.create_namespace:
            namespace = workloads.namespace_manifests(
                stack.namespace, list(stack.services.values()), delivery=stack.delivery
            )
            # Adoptable in both deliveries: a namespace kept by an earlier direct stack is taken over.
            foundation += _register_all(name, _annotated(namespace, PATCH_FORCE), _child(self, keep))
        if stack.delivery == "operator" and stack.config.operator.install:
            self.operator = Operator(
                f"{name}-operator", stack.config.operator.model_dump(by_alias=True, exclude_none=True), child
            )
            foundation.append(self.operator)
        keep_after = pulumi.ResourceOptions.merge(keep, pulumi.ResourceOptions(depends_on=list(foundation)))
        cache = _annotated(cache, PATCH_FORCE)
        foundation += [register(f"{name}-model-cache", m, _child(self, keep_after)) for m in cache]

        after = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=foundation))
        self.models = {
            m.name: Model(f"{name}-{m.name}", {"spec": {}}, after, _resolved=(m, stack)) for m in stack.models.values()
        }
        self.inference_services = {
            s.key: InferenceService(
                f"{name}-{s.name}",
                {"spec": {}, "model": self.models[s.model.name]},
                pulumi.ResourceOptions.merge(after, pulumi.ResourceOptions(depends_on=[self.models[s.model.name]])),
                _resolved=(s, stack),
                _cluster=view,
            )
            for s in stack.services.values()
        }
        # Keyed by the config keys users wrote, so `pulumi stack output services` reads like the stack file.
        self.services = {key: svc.outputs() for key, svc in self.inference_services.items()}
        self.namespace = stack.namespace
        self.delivery = stack.delivery
        self.register_outputs({"services": self.services, "delivery": self.delivery, "namespace": self.namespace})


# ---------------------------------------------------------------------------------------------------------
# Will the cluster's nodes run it? Checked at preview, against the nodes the stack's provider really has.
# ---------------------------------------------------------------------------------------------------------

SKIP_AWAIT = "pulumi.com/skipAwait"
NODE_READ_TIMEOUT = 5.0


@dataclass
class ClusterView:
    """The nodes of the cluster a stack deploys to, and what room they have left (None: pods not readable)."""

    nodes: list[cluster.Node]
    room: cluster.Room | None


def cluster_view(
    stack: ResolvedStack, parent: pulumi.Resource, opts: pulumi.ResourceOptions | None
) -> ClusterView | None:
    """The cluster the stack deploys to, or None when there is none to ask.

    None when rendering to a folder, when LLMKUBE_NODE_CHECK=0, when the caller passes its own provider (its
    kubeconfig is not ours to read), or when the nodes cannot be read (said as an info line, never fatal: a
    pull-request check may run without cluster credentials). Pods that cannot be listed (a 403, say) leave
    the room unknown: services are then judged by the nodes' allocatable resources only.
    """
    if not cluster.node_check_enabled() or (opts is not None and (opts.provider or opts.providers)):
        return None
    config = pulumi.Config("kubernetes")
    if config.get("renderYamlToDirectory"):
        return None
    try:
        reader = cluster.ClusterReader(
            config.get("kubeconfig"), config.get("context"), NODE_READ_TIMEOUT, cluster_name=config.get("cluster")
        )
        nodes = reader.nodes()
    except cluster.ClusterUnavailable as exc:
        pulumi.log.info(f"nodes not checked: {exc.message}", resource=parent)
        return None
    except Exception as exc:  # a check must never fail the preview
        pulumi.log.info(f"nodes not checked: {type(exc).__name__}: {exc}", resource=parent)
        return None
    try:
        pods = reader.pods()
    except cluster.ClusterUnavailable as exc:
        pulumi.log.info(f"room on the nodes not checked: {exc.message}", resource=parent)
        return ClusterView(nodes, None)
    ours = {s.name for s in stack.services.values()}

    def owner_of(pod: cluster.Pod) -> str | None:
        # This stack's own pods, by the labels both deliveries' Deployments select on.
        if pod.namespace != stack.namespace:
            return None
        for key in (workloads.LABEL_SERVICE, "app"):
            if pod.labels.get(key) in ours:
                return pod.labels[key]
        return None

    return ClusterView(nodes, cluster.Room(nodes, pods, owner_of))


class Scheduling(NamedTuple):
    text: str  # the service's `scheduling` output
    pending: bool  # no room for its pods: said as a warning, and not awaited


def scheduling(
    service: ResolvedService, manifests: list[dict[str, Any]], view: ClusterView, parent: pulumi.Resource
) -> Scheduling | None:
    """Where the service's pods can run: "fits: <nodes>", or "Pending: <why not>" (a warning).

    Judged on the pod we render; with delivery operator the controller's pod asks the same resources, node
    selector and tolerations. First against each node's allocatable resources; then, when the pods could be
    read, against what the pods already there and this stack's earlier services leave (in config order), for
    every replica (the HPA's minReplicas with autoscaling).
    """
    try:
        deployment = next(m for m in manifests if m["kind"] == "Deployment")
        hpa = next((m for m in manifests if m["kind"] == "HorizontalPodAutoscaler"), None)
        replicas = hpa["spec"]["minReplicas"] if hpa else deployment["spec"].get("replicas", 1)
        pod = deployment["spec"]["template"]["spec"]
        why = cluster.why_unschedulable(pod, view.nodes)
        fits: list[str] = []
        if why is None and view.room is not None:
            label = f"{service.namespace}/{service.name} (this stack)"
            fits, why = view.room.place(pod, replicas, service.name, label)
        elif why is None:
            fits = [node.name for node in view.nodes if cluster.why_unschedulable(pod, [node]) is None]
    except Exception as exc:  # a check must never fail the preview
        pulumi.log.info(f"nodes not checked for {service.name}: {type(exc).__name__}: {exc}", resource=parent)
        return None
    if replicas == 0:
        return Scheduling("no pods (replicas: 0)", pending=False)
    if why is None:
        return Scheduling(f"fits: {', '.join(fits)}", pending=False)
    message = f"its pod will stay Pending, {why}; deployed without waiting for it (an autoscaler may add a node)"
    pulumi.log.warn(str(Problem(service.path, message)), resource=parent)
    return Scheduling(f"Pending: {why}", pending=True)


def custom_resource(
    kind: Literal["Model", "InferenceService"], name: str, namespace: str, spec: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": workloads.common_labels(name, kind)},
        "spec": spec,
    }


def client_config(service: ResolvedService, base_url: str) -> dict[str, Any]:
    """A ready-to-paste OpenAI provider entry, in the shape of Qwen Code's ``modelProviders`` setting.

    llama-server serves one model and ignores the model name a client sends, so the service name is the id.
    It needs no key unless started with --api-key; the envKey is there because clients insist on one.
    """
    return {
        "modelProviders": {
            "openai": [
                {
                    "id": service.name,
                    "name": f"{service.name} ({service.model.name}, llmkube)",
                    "baseUrl": base_url,
                    "envKey": "LLMKUBE_API_KEY",
                }
            ]
        }
    }
