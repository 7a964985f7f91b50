"""Pulumi components: thin shells that register what the pipeline builds.

Arguments are typed dicts with the LLMKube JSON names (the Args in ``spec_args``, generated from ``api/``),
and every value may be a ``pulumi.Input``: a plain value or an Output of another resource. Plain arguments
are built at once; arguments holding Outputs are built when those are known, which in a preview may be
never (a resource not yet created): the plan and the workloads then wait for the update, and an info line
says which arguments they wait for. What is built from Outputs keeps their dependencies and secrecy.

A bad argument raises ConfigError, which Pulumi prints as one clean message (no stack trace) and which
fails the preview, or the update before anything of the component is applied. Its paths are the
component's argument paths (``InferenceService chat: spec.contextSize: ...``); a Platform made by the stack
program reports the stack's config paths (``llmkube:services.chat.contextSize``).

Settings (offline planning, timeouts, the node check, ...) come from the caller: the stack program passes
the ones it built; a component made by someone else's program without them reads the ``LLMKUBE_*``
environment once, as the edge of that program (``Settings.from_env``).

No ``from __future__ import annotations`` here: Pulumi's schema inference reads these annotations as types.
"""

import inspect
import os
import re
from collections.abc import Callable, Mapping
from fnmatch import fnmatch
from typing import TYPE_CHECKING, Any, NotRequired, Required, Self, TypedDict, TypeVar

import pulumi

from . import inputs, pipeline, workloads
from .api.service import DEFAULT_API_KEY_SECRET_KEY
from .errors import ConfigError, Problem, raise_if_any
from .register import register, resource_names
from .settings import Settings
from .spec_args import (
    Delivery,
    InferenceServiceSpec,
    ModelSpec,
    NetworkPolicySettings,
    OperatorSettings,
    PlatformArgs,
)

if TYPE_CHECKING:
    from . import placement

Options = pulumi.ResourceOptions | None
Carry = pulumi.Output[None] | None  # the arguments' dependencies and secrecy, when they held Outputs

# InferenceService spec fields that say where and how its pods run, never how much memory the server needs
# (``*``: and everything under them).
PLACEMENT_FIELDS = (
    "image",
    "nodeSelector*",
    "tolerations*",
    "affinity*",
    "podAnnotations*",
    "podLabels*",
    "runtimeClassName",
    "priorityClassName",
    "endpoint*",
    "autoscaling*",
    "modelCache*",
    "suspend",
    "revisionHistoryLimit",
    "rolloutPolicy*",
    "disruption*",
    "maxPodLifetimeSeconds",
    "maxPodLifetimeIdleTimeoutSeconds",
    "priority",
    "evictionProtection",
    "topologySpreadConstraints*",
    "podSecurityContext*",
    "securityContext*",
    "allowWeakerSecurityContext",
    "imagePullSecrets*",
    "env*",
    "command*",
    "containerPort",
    "bindAddress",
    "probeOverrides*",
    "extraVolumes*",
    "extraVolumeMounts*",
    "slo*",
)
B = TypeVar("B")


class ModelArgs(TypedDict):
    """Arguments of a Model component."""

    spec: Required[pulumi.Input[ModelSpec]]
    """The LLMKube Model spec (JSON names): source, sha256, format, quantization, hardware, resources, files."""

    namespace: NotRequired[pulumi.Input[str]]
    """Namespace of the Model (default: the stack default, llmkube)."""

    delivery: NotRequired[pulumi.Input[Delivery]]
    """direct (default): the services' init containers fetch the file; operator: a Model custom resource."""

    hardware: NotRequired[pulumi.Input[Any]]
    """A hardware profile (a built-in name, or {extends: name, ...}) whose GPUs fill the spec's GPU section when
    it has none."""

    allowHostPath: NotRequired[pulumi.Input[bool]]
    """Allow a source that is a path of the node (file://), mounted as hostPath (default false)."""


class InferenceServiceArgs(TypedDict):
    """Arguments of an InferenceService component."""

    spec: Required[pulumi.Input[InferenceServiceSpec]]
    """The LLMKube InferenceService spec (JSON names); its modelRef names the Model."""

    model: Required[pulumi.Input[dict[str, Any]]]
    """The served Model's spec (a ModelSpec object): a Model component's spec output, or from Python the Model
    component itself. A free-form object in the schema: a whole spec output could not be checked field by field
    before it is known."""

    namespace: NotRequired[pulumi.Input[str]]
    """Namespace of the service (default: the Model component's, else the stack default, llmkube)."""

    delivery: NotRequired[pulumi.Input[Delivery]]
    """direct (default): Pulumi renders the llama.cpp workloads; operator: an InferenceService custom resource."""

    hardware: NotRequired[pulumi.Input[Any]]
    """The hardware profile the service is planned for: a built-in name, or {extends: name, ...overrides}."""

    allowHostPath: NotRequired[pulumi.Input[bool]]
    """Allow a model that is a path of the node (file://), mounted as hostPath (default false)."""

    downloadMbps: NotRequired[pulumi.Input[int]]
    """Download speed to expect for the model in megabits per second, as the stack's llmkube:downloadMbps: Pulumi
    waits for the Deployment as long as the model takes to download at it, with headroom, on top of its usual wait."""

    networkPolicy: NotRequired[pulumi.Input[NetworkPolicySettings]]
    """The service's NetworkPolicy, as the stack's llmkube:networkPolicy: enabled (default true) and ingressFrom
    (networking/v1 peers; default: the pods of the service's namespace)."""

    apiKey: NotRequired[pulumi.Input[str]]
    """An API key the server requires (delivery direct), kept secret: written to a Secret of the service's and
    mounted as a file (--api-key-file). Or name an existing Secret in spec.apiKey."""


class ServiceOutputs(TypedDict):
    """What one service exposes (InferenceService outputs, and Platform's services by name)."""

    endpoint: str
    """The in-cluster URL of the server's API path."""

    baseUrl: str
    """The OpenAI-compatible base URL (…/v1)."""

    serviceName: str
    """The Kubernetes Service name."""

    namespace: str
    """The namespace of the service."""

    clientConfig: dict[str, Any]
    """Settings for an OpenAI-compatible client."""

    plan: NotRequired[dict[str, Any]]
    """The planner's placement, memory per device and speed estimate (when the model was planned)."""

    serverArgs: NotRequired[list[str]]
    """The llama-server arguments (delivery direct)."""

    scheduling: NotRequired[str]
    """Where the cluster's nodes can run the pods (when the node check ran)."""

    apiKeySecret: NotRequired[dict[str, str]]
    """The Secret (name) and key that hold the server's API key, when it requires one."""


def _child(parent: pulumi.Resource, opts: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=parent), opts)


def _register_all(
    prefix: str,
    manifests: list[dict[str, Any]],
    opts: pulumi.ResourceOptions,
    carry: Carry,
    by_kind: Mapping[str, pulumi.ResourceOptions] | None = None,
) -> list[Any]:
    """Register each manifest with ``opts``, merged with ``by_kind``'s options for its kind where it has some."""
    names = resource_names(prefix, manifests)
    extra = by_kind or {}
    return [
        _register_one(n, m, pulumi.ResourceOptions.merge(opts, extra.get(m["kind"])), carry)
        for n, m in zip(names, manifests, strict=True)
    ]


def _register_one(name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions, carry: Carry) -> Any:
    if carry is not None:
        fixed = ("apiVersion", "kind")
        manifest = {k: v if k in fixed else inputs.carried(v, carry) for k, v in manifest.items()}
    return register(name, manifest, opts)


# Retained objects outlive the stack; the next stack to deploy them (after a destroy, or with the other
# delivery) adopts them, taking over the fields its own Pulumi field manager did not write.
PATCH_FORCE = "pulumi.com/patchForce"
SKIP_AWAIT = "pulumi.com/skipAwait"


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


def _ready(resources: list[Any], outputs: dict[str, Any], carry: Carry) -> pulumi.Output[dict[str, Any]]:
    """The component's outputs, resolved once its resources are registered (and carrying the arguments')."""
    urns = [r.urn for r in resources]
    return pulumi.Output.all(*urns, inputs.carried(None, carry)).apply(lambda _: outputs)


class _Component(pulumi.ComponentResource):
    """A component that builds from its arguments (``__init__``) or registers what Platform built."""

    # Not annotated: schema inference reads every public annotation of a component class as an output.
    TYPE = ""
    _PROPS: tuple[str, ...] = ()  # the keys of the component's own properties (see _start)
    # Argument paths (fnmatch patterns) that place the pods but never size them: unknown at preview, they leave
    # the plan to be made all the same (see _preview).
    _PLACES_ONLY: tuple[str, ...] = ()
    _outputs: pulumi.Output[dict[str, Any]]

    @classmethod
    def _shell(cls, name: str, props: dict[str, Any], opts: Options) -> Self:
        """The component registered with the engine, without running ``__init__`` (which builds from args)."""
        self = cls.__new__(cls)
        pulumi.ComponentResource.__init__(self, cls.TYPE, name, props, opts)
        return self

    def _start(
        self,
        name: str,
        args: Mapping[str, Any],
        opts: Options,
        *,
        label: str | None,
        paths: Callable[[str], str],
        build: Callable[[Mapping[str, Any]], B],
        props: Callable[[B], dict[str, Any]],
        register: Callable[[B, Carry], pulumi.Output[dict[str, Any]]],
        plans: Callable[[B], list[str]] = lambda built: [],
    ) -> None:
        """Register the component, build it from its arguments now or once they are known, register the rest.

        ``build`` runs the pipeline on plain values; ``props`` are the component's own properties (the
        validated, effective spec, which policies read); ``register`` registers the children and returns the
        outputs, resolved once the children are registered; ``plans`` are the plan tables a build logs.
        """

        def built_from(plain: Mapping[str, Any]) -> B:
            try:
                return build(inputs.plain(plain))
            except ConfigError as error:
                raise (error if label is None else error.relabeled(label, paths)) from None

        if not inputs.has_outputs(args):
            built = built_from(dict(args))
            pulumi.ComponentResource.__init__(self, self.TYPE, name, props(built), opts)
            self._outputs = register(built, None)
        else:
            settled = pulumi.Output.from_input(args)
            later = settled.apply(built_from)
            known_later: dict[str, Any] = {key: later.apply(_prop(props, key)) for key in self._PROPS}
            pulumi.ComponentResource.__init__(self, self.TYPE, name, known_later, opts)
            carry = settled.apply(lambda _: None)
            self._outputs = later.apply(lambda b: register(b, carry))
            what = label or f"{self.TYPE.rsplit(':', 1)[-1]} {name}"
            inputs.known(args).apply(lambda known: self._preview(what, known, built_from, plans))

    def _preview(
        self, what: str, known: inputs.Known, build: Callable[[Mapping[str, Any]], B], plans: Callable[[B], list[str]]
    ) -> None:
        """What a preview says when some arguments are unknown: the plan all the same when only arguments that
        place the pods (namespace, image, labels, ...) are, else that the plan waits for the update too."""
        if not known.unknown:
            return  # everything is known: the component is built and planned as usual
        unknown = ", ".join(known.unknown)
        sizing = [p for p in known.unknown if not any(fnmatch(p, pattern) for pattern in self._PLACES_ONLY)]
        if not sizing:
            try:
                tables = plans(build(known.without_unknown))
            except ConfigError:
                tables = []  # judged on the real values at the update, where an error is reported
            if tables:
                pulumi.log.info(f"{what}: workloads deferred to the update: {unknown} not known until then", self)
                for table in tables:
                    pulumi.log.info(table, resource=self)
                return
        pulumi.log.info(
            f"{what}: plan and workloads deferred to the update: {unknown} not known until then", resource=self
        )

    def _output(self, key: str) -> pulumi.Output[Any]:
        return self._outputs.apply(lambda o: o.get(key))

    def _expose(self) -> None:
        """Set and register the outputs: every public annotation of the class, as schema inference reads them
        (``base_url: pulumi.Output[str]`` is the output ``baseUrl``)."""
        outputs: dict[str, pulumi.Output[Any]] = {}
        for attr in inspect.get_annotations(type(self)):
            if not attr.startswith("_"):
                key = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), attr)
                outputs[key] = self._output(key)
                setattr(self, attr, outputs[key])
        self.register_outputs(outputs)


def _carried_props(props: dict[str, Any], carry: Carry) -> dict[str, Any]:
    return {key: inputs.carried(value, carry) for key, value in props.items()}


def _prop(props: Callable[[B], dict[str, Any]], key: str) -> Callable[[B], Any]:
    return lambda built: props(built).get(key)


def _relabel_paths(renames: dict[str, str]) -> Callable[[str], str]:
    """Config paths -> argument paths: the longest matching prefix is renamed."""

    def paths(path: str) -> str:
        for old, new in sorted(renames.items(), key=lambda kv: -len(kv[0])):
            if path == old:
                return new
            if path.startswith(old + ".") or path.startswith(old + "["):
                return new + path[len(old) :] if new else path[len(old) + 1 :]
        return path

    return paths


OperatorArgs = OperatorSettings  # the Operator component's arguments are the llmkube:operator settings

_DEFAULTS: OperatorArgs = {}  # read only: the operator's defaults (schema inference refuses `X | None`)


class Operator(_Component):
    """The LLMKube operator: its CRDs, RBAC, controller Deployment and metrics Service."""

    TYPE = "llmkube:index:Operator"
    _PROPS = ("settings",)

    namespace: pulumi.Output[str]
    """Namespace of the controller."""

    image: pulumi.Output[str]
    """The controller image."""

    def __init__(self, name: str, args: OperatorArgs = _DEFAULTS, opts: pulumi.ResourceOptions | None = None):
        self._start(
            name,
            args,
            opts,
            label=f"Operator {name}",
            paths=_relabel_paths({"operator": ""}),
            build=pipeline.operator,
            props=lambda built: {"settings": built.settings.document()},
            register=lambda built, carry: self._register(name, built, carry),
        )
        self._expose()

    @classmethod
    def from_build(cls, name: str, built: pipeline.OperatorBuild, opts: Options = None, carry: Carry = None) -> Self:
        """An Operator component for an install that Platform's pipeline has already built."""
        self = cls._shell(name, _carried_props({"settings": built.settings.document()}, carry), opts)
        self._outputs = self._register(name, built, carry)
        self._expose()
        return self

    def _register(self, name: str, built: pipeline.OperatorBuild, carry: Carry) -> pulumi.Output[dict[str, Any]]:
        child = _child(self)
        crds = _register_all(f"{name}-crd", built.crds, child, carry)
        # The controller starts only once the kinds it watches exist.
        after_crds = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=crds))
        resources = _register_all(name, built.manifests, after_crds, carry)
        # rbac namespaced: the controller's writes in each namespace it serves (named apart from the objects above,
        # so theirs stay as they were).
        for served, manifests in built.served.items():
            resources += _register_all(f"{name}-in-{served}", manifests, after_crds, carry)
        return _ready(
            crds + resources, {"namespace": built.settings.namespace, "image": built.settings.image_ref}, carry
        )


class Model(_Component):
    """A model file. Delivery operator: a Model custom resource. Direct: the services' init containers fetch it."""

    TYPE = "llmkube:index:Model"
    _PROPS = ("name", "namespace", "spec", "path")

    name: pulumi.Output[str]
    """The Kubernetes name of the Model (what a service's modelRef names)."""

    namespace: pulumi.Output[str]
    """Namespace of the Model."""

    spec: pulumi.Output[dict[str, Any]]
    """The validated, effective Model spec (JSON names): what an InferenceService's model argument takes."""

    cache_path: pulumi.Output[str]
    """Where llama-server finds the file inside its pod."""

    def __init__(self, name: str, args: ModelArgs, opts: pulumi.ResourceOptions | None = None):
        self.built: pipeline.ModelBuild | None = None  # set when built from plain arguments
        self._start(
            name,
            args,
            opts,
            label=f"Model {name}",
            paths=_relabel_paths({f"models.{name}": "spec"}),
            build=lambda plain: pipeline.standalone_model(name, plain),
            props=lambda built: _model_props(built, f"Model {name}: spec"),
            register=lambda built, carry: self._register(name, built, carry),
        )
        self._expose()

    @classmethod
    def from_build(
        cls, name: str, built: pipeline.ModelBuild, opts: Options = None, carry: Carry = None, path: str = ""
    ) -> Self:
        """A Model component for a model that Platform's pipeline has already built (``path``: its config path)."""
        self = cls._shell(name, _carried_props(_model_props(built, path), carry), opts)
        self._outputs = self._register(name, built, carry)
        self._expose()
        return self

    def _register(self, name: str, built: pipeline.ModelBuild, carry: Carry) -> pulumi.Output[dict[str, Any]]:
        if carry is None:
            self.built = built
        resources = []
        if built.custom_resource is not None:
            resources.append(_register_one(f"{name}-model", built.custom_resource, _child(self), carry))
        if built.prefetch_job is not None:
            # Not awaited: the download may take longer than any preview should wait, and the services' pods
            # wait for it anyway (their downloader finds the file being fetched under the cache's lock).
            (job,) = _annotated([built.prefetch_job], SKIP_AWAIT)
            resources.append(_register_one(f"{name}-prefetch", job, _child(self), carry))
        outputs = {
            "name": built.model.name,
            "namespace": built.namespace,
            "spec": built.model.spec.document(),
            "cachePath": built.cache_path,
        }
        return _ready(resources, outputs, carry)


def _model_props(built: pipeline.ModelBuild, path: str) -> dict[str, Any]:
    """What a policy reads about a model: its names, its spec, and where its spec was written (``path``)."""
    return {"name": built.model.name, "namespace": built.namespace, "spec": built.model.spec.document(), "path": path}


class InferenceService(_Component):
    """One llama.cpp server. Delivery operator: an InferenceService custom resource. Direct: its workloads.

    Used on its own (not through Platform), a direct-delivery service keeps its model in a cache volume of
    its own, since no shared one is there; Platform gives all its services the namespace's shared cache.
    """

    TYPE = "llmkube:index:InferenceService"
    _PROPS = ("name", "namespace", "delivery", "spec", "model", "hardware", "plan", "path")
    _PLACES_ONLY = (
        "namespace",
        "delivery",
        "model.sha256",
        "model.fileSha256*",
        "downloadMbps",
        "networkPolicy*",
        *(f"spec.{f}" for f in PLACEMENT_FIELDS),
    )

    endpoint: pulumi.Output[str]
    """The in-cluster URL of the server's API path."""

    base_url: pulumi.Output[str]
    """The OpenAI-compatible base URL (…/v1)."""

    service_name: pulumi.Output[str]
    """The Kubernetes Service name."""

    namespace: pulumi.Output[str]
    """The namespace of the service."""

    client_config: pulumi.Output[dict[str, Any]]
    """Settings for an OpenAI-compatible client."""

    plan: pulumi.Output[dict[str, Any] | None]
    """The planner's placement, memory per device and speed estimate (when the model was planned)."""

    server_args: pulumi.Output[list[str] | None]
    """The llama-server arguments (delivery direct)."""

    scheduling: pulumi.Output[str | None]
    """Where the cluster's nodes can run the pods (when the node check ran)."""

    api_key_secret: pulumi.Output[dict[str, str] | None]
    """The Secret (name) and key that hold the server's API key, when it requires one."""

    def __init__(
        self,
        name: str,
        args: InferenceServiceArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        settings: Settings | None = None,
    ):
        settings = _settings(settings)
        given: dict[str, Any] = dict(args)
        api_key = given.pop("apiKey", None)
        if api_key is not None:
            given["apiKeys"] = {name: pipeline.KEY_GIVEN}
        model = given.get("model")
        model_key: str | None = None
        if isinstance(model, Model):
            # A Model component: its built spec when it had plain arguments, else its spec output (known when
            # its own arguments are); its namespace is the service's default either way.
            opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[model]))
            if model.built is not None:
                model_key = model.built.model.key
                given["model"] = model.built.model.spec.document()
                given.setdefault("namespace", model.built.namespace)
            else:
                given["model"] = model.spec
                given.setdefault("namespace", model.namespace)
        spec = given.get("spec")
        model_ref = spec.get("modelRef") if isinstance(spec, Mapping) else None
        renames = {f"services.{name}": "spec"}
        if isinstance(model_key or model_ref, str):
            renames[f"models.{model_key or model_ref}"] = "model"
        self._start(
            name,
            given,
            opts,
            label=f"InferenceService {name}",
            paths=_relabel_paths(renames),
            build=lambda plain: _standalone_service(name, plain, model_key, settings),
            props=lambda built: _service_props(built[0], f"InferenceService {name}: spec"),
            register=lambda built, carry: self._register_built(name, built, carry, api_key),
            plans=lambda built: [built[0].plan.table()] if built[0].plan is not None else [],
        )
        self._expose()

    def _register_built(
        self, name: str, built: tuple[pipeline.ServiceBuild, list[str]], carry: Carry, api_key: Any
    ) -> pulumi.Output[dict[str, Any]]:
        service, warnings = built
        for warning in warnings:
            pulumi.log.warn(warning, resource=self)
        classes = _register_priority_classes(name, service.priority_classes, _child(self), carry)
        return self._register(name, service, None, carry, api_key, after=classes)

    @classmethod
    def from_build(
        cls,
        name: str,
        built: pipeline.ServiceBuild,
        opts: Options = None,
        scheduling: "placement.Scheduling | None" = None,
        carry: Carry = None,
        api_key: pulumi.Input[str] | None = None,
        path: str = "",
    ) -> Self:
        """An InferenceService component for a service that Platform's pipeline has already built and placed
        (``path``: its config path)."""
        self = cls._shell(name, _carried_props(_service_props(built, path), carry), opts)
        self._outputs = self._register(name, built, scheduling, carry, api_key)
        self._expose()
        return self

    def _register(
        self,
        name: str,
        built: pipeline.ServiceBuild,
        placed: "placement.Scheduling | None",
        carry: Carry,
        api_key: pulumi.Input[str] | None = None,
        after: list[Any] | None = None,
    ) -> pulumi.Output[dict[str, Any]]:
        child = _child(self, pulumi.ResourceOptions(depends_on=after) if after else None)
        policy = [built.network_policy] if built.network_policy is not None else []
        if built.custom_resource is not None:
            resources = [_register_one(f"{name}-isvc", built.custom_resource, child, carry)]
            resources += _register_all(name, policy, child, carry)
        else:
            manifests = [_with_key(m, api_key) for m in built.workloads]
            if placed is not None and placed.pending:
                # A Deployment no node can run never becomes available, nor its Service's endpoints ready:
                # Pulumi would wait out its timeout and fail the update. The rest is still awaited.
                manifests = _annotated(manifests, SKIP_AWAIT, ("Deployment", "Service"))
            # A multi-node service's workers are named by their rank (<name>-rpc-<rank>-deployment, ...), apart
            # from the server's objects: a group that grows or shrinks never renames another member's objects.
            own: list[dict[str, Any]] = []
            workers: dict[int, list[dict[str, Any]]] = {}
            for manifest in manifests:
                rank = workloads.worker_rank(manifest)
                (own if rank is None else workers.setdefault(rank, [])).append(manifest)
            wait = _rollout_wait(built.rollout_minutes)
            # The policies first: a pod that starts before them would run unfiltered for a while.
            resources = _register_all(name, policy, child, carry)
            if built.worker_network_policy is not None:
                resources += _register_all(f"{name}-rpc", [built.worker_network_policy], child, carry)
            resources += _register_all(name, own, child, carry, wait)
            for rank, objects in workers.items():
                resources += _register_all(f"{name}-rpc-{rank}", objects, child, carry, wait)
        if built.plan is not None:
            pulumi.log.info(built.plan.table(), resource=self)
        return _ready(resources, service_outputs(built, placed), carry)


def _register_priority_classes(
    prefix: str, manifests: "tuple[dict[str, Any], ...]", opts: pulumi.ResourceOptions, carry: Carry
) -> list[Any]:
    """The cluster-scoped PriorityClasses (workloads.priority_class), each under its own name: every stack that
    uses a level writes the same object, so each adopts an existing one (patchForce) and keeps it on delete, since
    another stack's pods may still name it."""
    keep = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=True))
    return [
        _register_one(f"{prefix}-{m['metadata']['name']}", m, keep, carry)
        for m in _annotated(list(manifests), PATCH_FORCE)
    ]


def _rollout_wait(minutes: int | None) -> dict[str, pulumi.ResourceOptions] | None:
    """How long Pulumi waits for the Deployment (pipeline.ServiceBuild.rollout_minutes): its await includes the
    init containers, the model's download among them, which Pulumi's default 10 minutes may not cover."""
    if minutes is None:
        return None
    wait = f"{minutes}m"
    return {"Deployment": pulumi.ResourceOptions(custom_timeouts=pulumi.CustomTimeouts(create=wait, update=wait))}


def _with_key(manifest: dict[str, Any], api_key: pulumi.Input[str] | None) -> dict[str, Any]:
    """The managed API key Secret (workloads.api_key_secret) with its value, always a secret Output."""
    if manifest["kind"] != "Secret" or api_key is None:
        return manifest
    return {**manifest, "stringData": {DEFAULT_API_KEY_SECRET_KEY: pulumi.Output.secret(api_key)}}


def service_outputs(built: pipeline.ServiceBuild, placed: "placement.Scheduling | None") -> dict[str, Any]:
    """A service's outputs (ServiceOutputs), the optional ones only when they apply."""
    out: dict[str, Any] = {
        "endpoint": built.endpoint,
        "baseUrl": built.base_url,
        "serviceName": built.service.name,
        "namespace": built.service.namespace,
        "clientConfig": built.client_config,
    }
    if built.plan is not None:
        out["plan"] = built.plan.output()
    if built.server_args is not None:
        out["serverArgs"] = built.server_args
    if placed is not None:
        out["scheduling"] = placed.text
    if built.api_key_secret is not None:
        out["apiKeySecret"] = built.api_key_secret
    return out


def _service_props(built: pipeline.ServiceBuild, path: str) -> dict[str, Any]:
    """What a policy reads about a service: its validated, effective spec, its model, its plan, and where its spec
    was written (``path``: ``llmkube:services.chat``, ``InferenceService chat: spec``)."""
    service = built.service
    props: dict[str, Any] = {
        "name": service.name,
        "namespace": service.namespace,
        "delivery": "operator" if built.custom_resource is not None else "direct",
        "spec": service.spec.document(),
        "model": service.model.spec.document(),
        "hardware": service.profile.name,
        "path": path,
    }
    if built.plan is not None:
        props["plan"] = built.plan.output()
    return props


def _standalone_service(
    name: str, plain: Mapping[str, Any], model_key: str | None, settings: Settings
) -> tuple[pipeline.ServiceBuild, list[str]]:
    """A service on the model spec it was given: the Model's own name (from Python) or its modelRef keys it."""
    spec = plain["spec"]
    model_key = model_key or (spec.get("modelRef") if isinstance(spec, Mapping) else None)
    model_args: dict[str, Any] = {"spec": plain["model"]}
    model_args.update({k: plain[k] for k in ("namespace", "delivery", "allowHostPath") if k in plain})
    model = pipeline.standalone_model(str(model_key or name), model_args)
    built, planned = pipeline.standalone_service(name, plain, model, settings)
    return built, [str(w) for w in [*planned.stack.warnings, *built.warnings]]


class Platform(_Component):
    """A whole stack: namespace, model cache, operator (delivery operator), models and services."""

    TYPE = "llmkube:index:Platform"
    _PROPS = ("namespace", "delivery", "hardware")
    _PLACES_ONLY = (
        "namespace",
        "createNamespace",
        "modelCache*",
        "networkPolicy*",
        "operator*",
        "models.*.sha256",
        "models.*.fileSha256*",
        "downloadMbps",
        *(f"services.*.{f}" for f in PLACEMENT_FIELDS),
    )

    services: pulumi.Output[dict[str, ServiceOutputs]]
    """Each service's outputs, by its key under services."""

    namespace: pulumi.Output[str]
    """Namespace of the models and services."""

    delivery: pulumi.Output[str]
    """direct or operator."""

    def __init__(
        self,
        name: str,
        args: PlatformArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        settings: Settings | None = None,
        stack_config: bool = False,
    ):
        """``stack_config``: the arguments are a stack's ``llmkube:`` config (errors name ``llmkube:`` paths)."""
        settings = _settings(settings)
        self.inference_services: dict[str, InferenceService] = {}
        self.models: dict[str, Model] = {}
        given, api_keys = _split_api_keys(dict(args), None if stack_config else f"Platform {name}")
        self._paths = "llmkube:" if stack_config else f"Platform {name}: "  # how its config paths are written
        self._start(
            name,
            given,
            opts,
            label=None if stack_config else f"Platform {name}",
            paths=lambda path: path,
            build=lambda plain: pipeline.platform(plain, settings),
            props=lambda built: {
                "namespace": built.stack.namespace,
                "delivery": built.stack.delivery,
                "hardware": built.stack.profile.name,
            },
            register=lambda built, carry: self._register(name, built, settings, opts, carry, api_keys),
            plans=lambda built: [s.plan.table() for s in built.services.values() if s.plan is not None],
        )
        self._expose()

    def _register(
        self,
        name: str,
        built: pipeline.StackBuild,
        settings: Settings,
        opts: Options,
        carry: Carry,
        api_keys: Callable[[str], pulumi.Input[str] | None],
    ) -> pulumi.Output[dict[str, Any]]:
        stack = built.stack
        for warning in [*stack.warnings, *(w for s in built.services.values() for w in s.warnings)]:
            pulumi.log.warn(str(warning), resource=self)
        child = _child(self)

        placed: dict[str, placement.Scheduling | None] = {}
        target = _cluster_target(settings, opts)
        if target is not None:
            from . import placement as node_check  # not imported when nothing is checked

            notes = node_check.Notes()
            reader = node_check.open_reader(target, notes)
            view = None
            if reader is not None:
                created = {"namespace": stack.namespace} if built.namespace else {}
                if built.operator is not None:
                    created["operator.namespace"] = built.operator.settings.namespace
                raise_if_any(node_check.foreign_namespaces(created, reader, notes))
                view = node_check.cluster_view(stack, reader, notes)
            for service_name, service in built.services.items():
                placed[service_name] = (
                    None if view is None else node_check.scheduling(service.service, service.workloads, view, notes)
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
            namespace = _annotated(built.namespace, PATCH_FORCE)
            foundation += _register_all(name, namespace, _child(self, keep), carry)
        if built.operator is not None:
            # After the namespace: the controller's Role goes into it.
            after_namespace = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=list(foundation)))
            self.operator = Operator.from_build(f"{name}-operator", built.operator, after_namespace, carry)
            foundation.append(self.operator)
        # The PriorityClasses the pods name: a pod naming a missing one is refused at creation.
        foundation += _register_priority_classes(name, built.priority_classes, _child(self), carry)
        keep_after = pulumi.ResourceOptions.merge(keep, pulumi.ResourceOptions(depends_on=list(foundation)))
        cache = _annotated(built.cache, PATCH_FORCE)
        foundation += [_register_one(f"{name}-model-cache", m, _child(self, keep_after), carry) for m in cache]

        after = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=foundation))
        # llmkube:observability: the monitors (their CRDs are the Prometheus Operator's), prometheus-adapter's
        # rules and the dashboard, once the namespaces they go into exist.
        monitoring = _register_all(f"{name}-monitoring", list(built.monitoring), after, carry)
        self.models = {
            m: Model.from_build(f"{name}-{m}", b, after, carry, self._paths + b.model.path)
            for m, b in built.models.items()
        }
        for service_name, service in built.services.items():
            model = self.models[service.service.model.name]
            opts_after_model = pulumi.ResourceOptions.merge(after, pulumi.ResourceOptions(depends_on=[model]))
            self.inference_services[service.service.key] = InferenceService.from_build(
                f"{name}-{service_name}",
                service,
                opts_after_model,
                placed.get(service_name),
                carry,
                api_keys(service.service.key),
                self._paths + service.service.path,
            )
        # Keyed by the config keys users wrote, so `pulumi stack output services` reads like the stack file.
        services = {
            service.service.key: service_outputs(service, placed.get(service_name))
            for service_name, service in built.services.items()
        }
        children: list[Any] = [
            *foundation,
            *monitoring,
            *self.models.values(),
            *self.inference_services.values(),
        ]
        outputs = {"services": services, "namespace": stack.namespace, "delivery": stack.delivery}
        # Ready once every child component's own outputs are (so its workloads are registered too).
        ready = [c._outputs for c in children if isinstance(c, _Component)]
        return pulumi.Output.all(_ready(children, outputs, carry), *ready).apply(lambda all_: all_[0])


def _split_api_keys(
    args: dict[str, Any], label: str | None
) -> tuple[dict[str, Any], Callable[[str], pulumi.Input[str] | None]]:
    """The arguments with each API key replaced by a mark, and each service's key: the keys never reach the
    pipeline, so that secrecy stays on them instead of spreading to everything built from them. From another
    language the map may come as one (secret) Output: only its names go on, unsecreted."""
    keys = args.get("apiKeys")
    if keys is None:
        return args, lambda service: None
    if isinstance(keys, pulumi.Output):
        names = pulumi.Output.unsecret(keys).apply(lambda m: dict.fromkeys(m or {}, pipeline.KEY_GIVEN))
        return {**args, "apiKeys": names}, lambda service: keys.apply(lambda m: (m or {}).get(service))
    if not isinstance(keys, Mapping):
        error = ConfigError([Problem("apiKeys", "must be a map of service name to API key (each key a secret)")])
        raise (error if label is None else error.relabeled(label, lambda path: path)) from None
    given = dict(keys)
    return pipeline.without_key_values(args), given.get


def _settings(settings: Settings | None) -> Settings:
    # A component made without settings is at the edge of someone else's program: the environment decides.
    if settings is not None:
        return settings
    try:
        return Settings.from_env(os.environ)
    except ValueError as exc:
        raise pulumi.RunError(str(exc)) from None


def _cluster_target(settings: Settings, opts: pulumi.ResourceOptions | None) -> "placement.ClusterTarget | None":
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
