"""The rules of the llmkube policy pack (``policy/``), as pure functions over what a preview registers.

Each rule reads resource properties (dicts, as Pulumi's policy runtime hands them over) and returns its
violations as messages; ``policy_pack`` wires them into a ``pulumi_policy.PolicyPack``. Our components register
what the rules need: an InferenceService's validated, effective ``spec``, its ``model``, ``plan``, ``namespace``
and ``path`` (``llmkube:services.chat`` from a stack, ``InferenceService chat: spec`` from a program); a Model's
``spec`` and ``path``. Pod security and exposure also read the Kubernetes objects of the whole stack, whoever
made them. Every message starts with the path, then says what is wrong and how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from .api.service import EXPOSED_ENDPOINT_TYPES
from .hardware.profile import LLAMACPP_IMAGE_REPOSITORY
from .sources import HF_HOST, SourceError, parse_source
from .workloads.podsecurity import containers, restricted_shortfalls

Props = Mapping[str, Any]

SERVICE_TYPE: Final = "llmkube:index:InferenceService"
MODEL_TYPE: Final = "llmkube:index:Model"
DEPLOYMENT_TYPE: Final = "kubernetes:apps/v1:Deployment"
INGRESS_TYPE: Final = "kubernetes:networking.k8s.io/v1:Ingress"
HTTPROUTE_TYPE: Final = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
HPA_TYPE: Final = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
SERVICE_OBJECT_TYPE: Final = "kubernetes:core/v1:Service"

# Tags that move: what they name changes under a running stack (llama.cpp publishes server[-<backend>] and
# latest on every build, and server[-<backend>]-b<build> once).
_BUILD_TAG = re.compile(r"-b\d+$")


@dataclass(frozen=True)
class Rule:
    """One policy: its name, what it checks, its default level and its settings (a JSON schema's properties)."""

    name: str
    description: str
    level: str  # "mandatory" or "advisory"
    config: Mapping[str, Mapping[str, Any]]


RULES: Final = (
    Rule(
        "llmkube-exposure",
        "A service reachable from outside the cluster by its endpoint (NodePort, LoadBalancer) asks an API key.",
        "mandatory",
        {},
    ),
    Rule(
        "llmkube-exposure-routes",
        "No Ingress or HTTPRoute in the stack sends traffic to a llama-server that asks no API key.",
        "mandatory",
        {},
    ),
    Rule("llmkube-integrity", "A downloaded model has a sha256 and never comes over plain http.", "mandatory", {}),
    Rule("llmkube-pinned-images", "llama-server images are pinned (a build tag or a digest).", "advisory", {}),
    Rule(
        "llmkube-gpu-budget",
        "The GPUs the stack's Deployments hold, per namespace (per pod x most replicas), stay at or under maxGpus.",
        "mandatory",
        {"maxGpus": {"type": "integer", "minimum": 0}},
    ),
    Rule("llmkube-fit", "Every service has a plan that fits its hardware (none deferred).", "mandatory", {}),
    Rule(
        "llmkube-speed",
        "Every service's decode estimate is at least minDecodeTokensPerSecond.",
        "advisory",
        {"minDecodeTokensPerSecond": {"type": "number", "minimum": 0}},
    ),
    Rule(
        "llmkube-pod-security",
        "No privileged container, no hostPath unless allowHostPath, restricted settings kept.",
        "mandatory",
        {"allowHostPath": {"type": "boolean"}},
    ),
    Rule(
        "llmkube-allowed-sources",
        "Model sources come from allowedHosts (URLs) and allowedOwners (Hugging Face organisations).",
        "mandatory",
        {
            "allowedHosts": {"type": "array", "items": {"type": "string"}},
            "allowedOwners": {"type": "array", "items": {"type": "string"}},
        },
    ),
)


def _service(props: Props) -> str:
    return f"{props.get('path') or props.get('name')}"


# --- per resource ----------------------------------------------------------------------------------------------


def integrity(model: Props) -> list[str]:
    """A Model downloaded over plain http, or without a sha256."""
    spec = model.get("spec") or {}
    try:
        source = parse_source(str(spec.get("source", "")))
    except SourceError:
        return []  # refused by the components already
    path = model.get("path") or model.get("name")
    out = []
    if source.scheme == "http":
        out.append(f"{path}.source: plain http, which anyone on the way can change; use https")
    if source.downloaded and not spec.get("sha256"):
        out.append(
            f"{path}.sha256: {source.file_name} is downloaded without a sha256, so any file the server sends is "
            "served; set sha256 (and fileSha256 for further files) to the file's digest"
        )
    return out


def pinned_image(service: Props) -> list[str]:
    """A llama-server image on a tag that moves."""
    image = str((service.get("spec") or {}).get("image") or "")
    if not image or "@sha256:" in image:
        return []
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if tag and tag != "latest" and (not name.startswith(LLAMACPP_IMAGE_REPOSITORY) or _BUILD_TAG.search(tag)):
        return []
    pinned = f"{name}:{tag}-b<build>" if name.startswith(LLAMACPP_IMAGE_REPOSITORY) and tag else f"{name}:<version>"
    return [
        f"{_service(service)}.image: {image}{'' if tag else ' (no tag)'} is a tag that moves with every release, "
        f"so a restart can run another server than the one reviewed; pin it, e.g. {pinned} or {name}@sha256:<digest>"
    ]


def fit(service: Props) -> list[str]:
    """A service without a plan: deferred to the update (unknown arguments) or its model not readable."""
    if service.get("plan"):
        return []
    return [
        f"{_service(service)}: no plan at preview (its arguments were not known, or its model's metadata could "
        "not be read), so nobody checked that it fits; give known arguments, a catalog entry or cached metadata"
    ]


def speed(service: Props, minimum: float | None) -> list[str]:
    plan = service.get("plan") or {}
    decode = plan.get("decodeTokensPerSecond")
    if minimum is None or decode is None or decode >= minimum:
        return []
    return [
        f"{_service(service)}: decodes about {decode} tokens/s ({plan.get('placement')}), below "
        f"minDecodeTokensPerSecond {minimum}; give it more GPUs, a smaller context or quantization, or offload: auto"
    ]


def allowed_source(model: Props, hosts: Iterable[str] | None, owners: Iterable[str] | None) -> list[str]:
    """A model source outside the allowlists (each applies when configured)."""
    spec = model.get("spec") or {}
    try:
        source = parse_source(str(spec.get("source", "")))
    except SourceError:
        return []
    if not source.downloaded or source.url is None:
        return []
    url = urlsplit(source.url)
    host = (url.hostname or "").lower()
    path = model.get("path") or model.get("name")
    if hosts is not None and host not in {h.lower() for h in hosts}:
        return [f"{path}.source: host {host} is not in allowedHosts ({', '.join(hosts) or 'none'}); use a mirror there"]
    if owners is not None and host == HF_HOST:
        owner = url.path.strip("/").split("/", 1)[0]
        if owner not in set(owners):
            allowed = ", ".join(owners) or "none"
            return [f"{path}.source: Hugging Face organisation {owner} is not in allowedOwners ({allowed})"]
    return []


def pod_security(deployment: Props, allow_host_path: bool) -> list[str]:
    """A Deployment's pod that is privileged, mounts the node, or drops the restricted settings."""
    metadata = deployment.get("metadata") or {}
    where = f"Deployment {metadata.get('namespace', '')}/{metadata.get('name', '')}"
    service = (metadata.get("labels") or {}).get("inference.llmkube.dev/service")
    if service:
        where += f" (service {service})"
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    out = []
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume and not allow_host_path:
            out.append(
                f"{where}: volume {volume.get('name')} mounts the node's {volume['hostPath'].get('path')} (hostPath); "
                "copy the model to a volume, or set allowHostPath in this policy's config"
            )
    pod_context = pod.get("securityContext") or {}
    for container in containers(pod):
        name = container.get("name")
        if (container.get("securityContext") or {}).get("privileged"):
            out.append(f"{where}: container {name} is privileged; drop privileged")
        missing = restricted_shortfalls(container, pod_context)
        if missing:
            out.append(f"{where}: container {name} lacks the restricted settings {', '.join(missing)}")
    return out


# --- over the whole stack --------------------------------------------------------------------------------------


def _deployment_gpus(deployment: Props) -> int:
    """GPUs a Deployment's pods hold at most: per pod (extended resources named */gpu or *gpu*) x replicas."""
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    per_pod = 0
    for container in pod.get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        per_pod += sum(int(v) for k, v in limits.items() if "gpu" in str(k).lower())
    replicas = (deployment.get("spec") or {}).get("replicas")
    return per_pod * int(1 if replicas is None else replicas)


def gpu_budget(resources: Iterable[tuple[str, Props]], max_gpus: int | None) -> list[str]:
    """Namespaces whose Deployments (ours and anyone's in the stack) hold more GPUs than maxGpus; an autoscaled
    Deployment counts at its HorizontalPodAutoscaler's maxReplicas."""
    if max_gpus is None:
        return []
    resources = list(resources)
    most = {
        ((p.get("metadata") or {}).get("namespace"), ((p.get("spec") or {}).get("scaleTargetRef") or {}).get("name")):
        (p.get("spec") or {}).get("maxReplicas")
        for k, p in resources if k == HPA_TYPE
    }  # fmt: skip
    by_namespace: dict[str, list[tuple[str, int]]] = {}
    for kind, deployment in resources:
        if kind != DEPLOYMENT_TYPE:
            continue
        metadata = deployment.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or "default"), str(metadata.get("name"))
        scaled = most.get((namespace, name))
        if scaled is not None:
            deployment = {**deployment, "spec": {**(deployment.get("spec") or {}), "replicas": scaled}}
        gpus = _deployment_gpus(deployment)
        if gpus:
            by_namespace.setdefault(namespace, []).append((name, gpus))
    out = []
    for namespace, asked in sorted(by_namespace.items()):
        total = sum(n for _, n in asked)
        if total > max_gpus:
            parts = ", ".join(f"{name} {n}" for name, n in asked)
            out.append(
                f"namespace {namespace}: {total} GPUs requested ({parts}), over maxGpus {max_gpus}; lower "
                "resources.gpu, replicas or autoscaling.maxReplicas"
            )
    return out


def _routed_services(kind: str, props: Props) -> set[str]:
    """The Service names an Ingress or HTTPRoute sends traffic to."""
    names: set[str] = set()
    spec = props.get("spec") or {}
    if kind == INGRESS_TYPE:
        default = ((spec.get("defaultBackend") or {}).get("service") or {}).get("name")
        names.update([default] if default else [])
        for rule in spec.get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                name = ((path.get("backend") or {}).get("service") or {}).get("name")
                names.update([name] if name else [])
    else:
        for rule in spec.get("rules") or []:
            names.update(ref.get("name") for ref in rule.get("backendRefs") or [] if ref.get("name"))
    return names


_KEY_FIX = "set an API key (llmkube:apiKeys.<service>, the apiKey argument, or apiKey.secretName)"


def exposure(service: Props) -> list[str]:
    """A service whose own endpoint (NodePort, LoadBalancer) reaches it from outside without a key."""
    spec = service.get("spec") or {}
    endpoint_type = (spec.get("endpoint") or {}).get("type")
    if spec.get("apiKey") or endpoint_type not in EXPOSED_ENDPOINT_TYPES:
        return []
    return [f"{_service(service)}.endpoint.type: {endpoint_type} exposes the server without an API key; {_KEY_FIX}"]


def routed_exposure(resources: Iterable[tuple[str, Props]]) -> list[str]:
    """An Ingress or HTTPRoute (anyone's, in the stack) to a llama-server that asks no key (--api-key-file)."""
    resources = list(resources)
    keyless: dict[tuple[str, str], str] = {}
    for kind, deployment in resources:
        metadata = deployment.get("metadata") or {}
        service = (metadata.get("labels") or {}).get("inference.llmkube.dev/service")
        if kind != DEPLOYMENT_TYPE or not service:
            continue
        pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
        args = [a for c in pod.get("containers") or [] for a in c.get("args") or []]
        if "--api-key-file" not in args and "--api-key" not in args:
            keyless[(str(metadata.get("namespace") or "default"), str(service))] = str(service)
    out = []
    for kind, props in resources:
        if kind not in (INGRESS_TYPE, HTTPROUTE_TYPE):
            continue
        metadata = props.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "default")
        for name in sorted(_routed_services(kind, props)):
            if (namespace, name) in keyless:
                route = f"{kind.rsplit(':', 1)[-1]} {namespace}/{metadata.get('name')}"
                out.append(f"service {name} ({namespace}): {route} routes to it without an API key; {_KEY_FIX}")
    return out


# --- the pack ----------------------------------------------------------------------------------------------------


def policy_pack(name: str = "llmkube") -> Any:
    """The PolicyPack of every rule (a Pulumi policy program: call it from a pack's __main__.py)."""
    from pulumi_policy import (
        EnforcementLevel,
        PolicyConfigSchema,
        PolicyPack,
        ResourceValidationArgs,
        ResourceValidationPolicy,
        StackValidationArgs,
        StackValidationPolicy,
    )

    levels = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}

    def on(kind: str, check: Any) -> Any:
        def validate(args: ResourceValidationArgs, report: Any) -> None:
            if args.resource_type == kind:
                for message in check(args.props, args.get_config()):
                    report(message)

        return validate

    def stack(check: Any) -> Any:
        def validate(args: StackValidationArgs, report: Any) -> None:
            for message in check([(r.resource_type, r.props) for r in args.resources], args.get_config()):
                report(message)

        return validate

    checks: dict[str, tuple[str, Any]] = {
        "llmkube-exposure": ("resource", on(SERVICE_TYPE, lambda p, c: exposure(p))),
        "llmkube-exposure-routes": ("stack", stack(lambda rs, c: routed_exposure(rs))),
        "llmkube-integrity": ("resource", on(MODEL_TYPE, lambda p, c: integrity(p))),
        "llmkube-pinned-images": ("resource", on(SERVICE_TYPE, lambda p, c: pinned_image(p))),
        "llmkube-gpu-budget": (
            "stack",
            stack(lambda rs, c: gpu_budget(rs, c.get("maxGpus"))),
        ),
        "llmkube-fit": ("resource", on(SERVICE_TYPE, lambda p, c: fit(p))),
        "llmkube-speed": ("resource", on(SERVICE_TYPE, lambda p, c: speed(p, c.get("minDecodeTokensPerSecond")))),
        "llmkube-pod-security": (
            "resource",
            on(DEPLOYMENT_TYPE, lambda p, c: pod_security(p, bool(c.get("allowHostPath")))),
        ),
        "llmkube-allowed-sources": (
            "resource",
            on(MODEL_TYPE, lambda p, c: allowed_source(p, c.get("allowedHosts"), c.get("allowedOwners"))),
        ),
    }
    policies: list[Any] = []
    for rule in RULES:
        how, validate = checks[rule.name]
        schema = PolicyConfigSchema(properties={k: dict(v) for k, v in rule.config.items()}) if rule.config else None
        cls = StackValidationPolicy if how == "stack" else ResourceValidationPolicy
        kwargs: dict[str, Any] = {"config_schema": schema} if schema is not None else {}
        policies.append(cls(rule.name, rule.description, validate, levels[rule.level], **kwargs))
    return PolicyPack(name, policies)
