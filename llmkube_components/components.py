"""Pulumi components: thin shells that register what the pipeline builds.

Arguments are plain typed dicts with the LLMKube JSON names, so that these components can later be served
to other Pulumi languages as a component provider; the pydantic API validates them inside. A bad argument
raises ConfigError, which Pulumi prints as one clean message (no stack trace) and which fails the preview.

Settings (offline planning, timeouts, the node check, ...) come from the caller: the stack program passes
the ones it built; a component made by someone else's program without them reads the ``LLMKUBE_*``
environment once, as the edge of that program (``Settings.from_env``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, NotRequired, Required, Self, TypedDict

import pulumi

from . import pipeline
from .api import ModelSpec
from .api.stack import Delivery
from .register import register, resource_names
from .settings import Settings

if TYPE_CHECKING:
    from . import placement

Options = pulumi.ResourceOptions | None


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


class _Component(pulumi.ComponentResource):
    """A component that either builds from its args (``__init__``) or registers what Platform built."""

    TYPE: str

    @classmethod
    def _shell(cls, name: str, opts: Options) -> Self:
        """The component registered with the engine, without running ``__init__`` (which builds from args)."""
        self = cls.__new__(cls)
        pulumi.ComponentResource.__init__(self, cls.TYPE, name, {}, opts)
        return self


class Operator(_Component):
    """The LLMKube operator: its CRDs, RBAC, controller Deployment and metrics Service."""

    TYPE = "llmkube:index:Operator"

    namespace: str
    image: str

    def __init__(self, name: str, args: OperatorArgs | None = None, opts: pulumi.ResourceOptions | None = None):
        super().__init__(self.TYPE, name, {}, opts)
        self._register(name, pipeline.operator(args or {}))

    @classmethod
    def from_build(cls, name: str, built: pipeline.OperatorBuild, opts: Options = None) -> Operator:
        """An Operator component for an install that Platform's pipeline has already built."""
        self = cls._shell(name, opts)
        self._register(name, built)
        return self

    def _register(self, name: str, built: pipeline.OperatorBuild) -> None:
        child = _child(self)
        self.crds = _register_all(f"{name}-crd", built.crds, child)
        # The controller starts only once the kinds it watches exist.
        after_crds = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=self.crds))
        self.resources = _register_all(name, built.manifests, after_crds)
        self.namespace = built.settings.namespace
        self.image = built.settings.image_ref
        self.register_outputs({"namespace": self.namespace, "image": self.image})


class Model(_Component):
    """A model file. Delivery operator: a Model custom resource. Direct: the services' init containers fetch it."""

    TYPE = "llmkube:index:Model"

    name: str
    spec: ModelSpec
    cache_path: str

    def __init__(self, name: str, args: ModelArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(self.TYPE, name, {}, opts)
        self._register(name, pipeline.standalone_model(name, args))

    @classmethod
    def from_build(cls, name: str, built: pipeline.ModelBuild, opts: pulumi.ResourceOptions | None = None) -> Model:
        """A Model component for a model that Platform's pipeline has already built."""
        self = cls._shell(name, opts)
        self._register(name, built)
        return self

    def _register(self, name: str, built: pipeline.ModelBuild) -> None:
        self.built = built
        self.key = built.model.key
        self.name = built.model.name
        self.spec = built.model.spec
        self.namespace = built.namespace
        self.cache_path = built.cache_path
        self.custom_resource = None
        if built.custom_resource is not None:
            self.custom_resource = register(f"{name}-model", built.custom_resource, _child(self))
        self.register_outputs({"name": self.name, "cachePath": self.cache_path})


class InferenceService(_Component):
    """One llama.cpp server. Delivery operator: an InferenceService custom resource. Direct: its workloads.

    Used on its own (not through Platform), a direct-delivery service keeps its model in a cache volume of
    its own, since no shared one is there; Platform gives all its services the namespace's shared cache.
    """

    TYPE = "llmkube:index:InferenceService"

    endpoint: str
    base_url: str
    client_config: dict[str, Any]
    server_args: list[str] | None
    plan: dict[str, Any] | None  # the planner's placement, memory per device and throughput estimate
    scheduling: str | None  # where the cluster's nodes can run its pods, when they were checked

    def __init__(
        self, name: str, args: InferenceServiceArgs, opts: Options = None, *, settings: Settings | None = None
    ):
        super().__init__(self.TYPE, name, {}, opts)
        built, planned = pipeline.standalone_service(name, args, args["model"].built, _settings(settings))
        for warning in planned.stack.warnings:
            pulumi.log.warn(str(warning), resource=self)
        self._register(name, built, None)

    @classmethod
    def from_build(
        cls,
        name: str,
        built: pipeline.ServiceBuild,
        opts: pulumi.ResourceOptions | None = None,
        scheduling: placement.Scheduling | None = None,
    ) -> InferenceService:
        """An InferenceService component for a service that Platform's pipeline has already built and placed."""
        self = cls._shell(name, opts)
        self._register(name, built, scheduling)
        return self

    def _register(self, name: str, built: pipeline.ServiceBuild, placed: placement.Scheduling | None) -> None:
        child = _child(self)
        self.scheduling = placed.text if placed is not None else None
        if built.custom_resource is not None:
            self.resources = [register(f"{name}-isvc", built.custom_resource, child)]
        else:
            manifests = built.workloads
            if placed is not None and placed.pending:
                # A Deployment no node can run never becomes available, nor its Service's endpoints ready:
                # Pulumi would wait out its timeout and fail the update. The rest is still awaited.
                manifests = _annotated(manifests, SKIP_AWAIT, ("Deployment", "Service"))
            self.resources = _register_all(name, manifests, child)
        self.server_args = built.server_args
        self.service_name = built.service.name
        self.plan = built.plan.output() if built.plan is not None else None
        if built.plan is not None:
            pulumi.log.info(built.plan.table(), resource=self)
        self.endpoint = built.endpoint
        self.base_url = built.base_url
        self.client_config = built.client_config
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

    def __init__(self, name: str, args: PlatformArgs, opts: Options = None, *, settings: Settings | None = None):
        super().__init__("llmkube:index:Platform", name, {}, opts)
        settings = _settings(settings)
        built = pipeline.platform(args, settings)
        stack = built.stack
        for warning in stack.warnings:
            pulumi.log.warn(str(warning), resource=self)
        child = _child(self)

        placed: dict[str, placement.Scheduling | None] = {}
        target = _cluster_target(settings, opts)
        if target is not None:
            from . import placement  # the node check's reader and rules: not imported when nothing is checked

            notes = placement.Notes()
            view = placement.cluster_view(stack, target, notes)
            for service_name, service in built.services.items():
                placed[service_name] = (
                    None if view is None else placement.scheduling(service.service, service.workloads, view, notes)
                )
            for info in notes.infos:
                pulumi.log.info(info, resource=self)
            for warning_text in notes.warnings:
                pulumi.log.warn(warning_text, resource=self)

        # The shared model cache outlives every service and the stack itself: re-downloading tens of
        # gigabytes because a service was renamed is the failure this prevents. Its namespace is kept with
        # it, since deleting a namespace deletes the volumes in it, in both deliveries: the operator keeps
        # its downloads in the namespace too, and a namespace adopted from an earlier direct stack may
        # still hold our cache.
        keep = pulumi.ResourceOptions(retain_on_delete=True)

        foundation: list[pulumi.Resource] = []
        if built.namespace:
            # Adoptable in both deliveries: a namespace kept by an earlier direct stack is taken over.
            foundation += _register_all(name, _annotated(built.namespace, PATCH_FORCE), _child(self, keep))
        if built.operator is not None:
            self.operator = Operator.from_build(f"{name}-operator", built.operator, child)
            foundation.append(self.operator)
        keep_after = pulumi.ResourceOptions.merge(keep, pulumi.ResourceOptions(depends_on=list(foundation)))
        cache = _annotated(built.cache, PATCH_FORCE)
        foundation += [register(f"{name}-model-cache", m, _child(self, keep_after)) for m in cache]

        after = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=foundation))
        self.models = {m: Model.from_build(f"{name}-{m}", b, after) for m, b in built.models.items()}
        self.inference_services = {}
        for service_name, service in built.services.items():
            model = self.models[service.service.model.name]
            opts_after_model = pulumi.ResourceOptions.merge(after, pulumi.ResourceOptions(depends_on=[model]))
            self.inference_services[service.service.key] = InferenceService.from_build(
                f"{name}-{service_name}", service, opts_after_model, placed.get(service_name)
            )
        # Keyed by the config keys users wrote, so `pulumi stack output services` reads like the stack file.
        self.services = {key: svc.outputs() for key, svc in self.inference_services.items()}
        self.namespace = stack.namespace
        self.delivery = stack.delivery
        self.register_outputs({"services": self.services, "delivery": self.delivery, "namespace": self.namespace})


SKIP_AWAIT = "pulumi.com/skipAwait"


def _settings(settings: Settings | None) -> Settings:
    # A component made without settings is at the edge of someone else's program: the environment decides.
    if settings is not None:
        return settings
    try:
        return Settings.from_env(os.environ)
    except ValueError as exc:
        raise pulumi.RunError(str(exc)) from None


def _cluster_target(settings: Settings, opts: pulumi.ResourceOptions | None) -> placement.ClusterTarget | None:
    """The cluster the stack's provider targets, or None when there is none to ask.

    None when the node check is off, when the caller passes its own provider (its kubeconfig is not ours to
    read), or when the provider renders to a folder.
    """
    if not settings.node_check or (opts is not None and (opts.provider or opts.providers)):
        return None
    config = pulumi.Config("kubernetes")
    if config.get("renderYamlToDirectory"):
        return None
    from . import placement

    # Settings made by hand carry no environment; the kubeconfig's exec plugins need this process's (PATH).
    environ = settings.environ or os.environ
    return placement.ClusterTarget(config.get("kubeconfig"), config.get("context"), config.get("cluster"), environ)
