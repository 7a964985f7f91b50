"""Checks that need more than pydantic: explicit functions that return problems (path, value, what is allowed).

They run on the resolved stack before any builder, so the builders can trust their input, and every problem
of a stack is reported at once (``llmkube check`` and ``pulumi preview`` show the whole list):

- ``spec_problems``: what the effective specs say (a namespace the stack must not take over, model sources,
  node paths without consent, further files, layerSplit, extraArgs llama-server cannot take, a hostMemory
  request above the memory limit), before planning;
- ``planned_problems``: what needs the model sizes the planner read (a model cache too small for its
  models), reported together with the planner's own findings, before building.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Final

from .api.base import DNS_SUBDOMAIN_PATTERN, PATTERN_HINTS, format_bytes, label_problem, parse_quantity
from .api.stack import (
    PER_SERVICE_CACHE_SUFFIX,
    RESERVED_NAMESPACES,
    SHARED_CACHE_PVC_NAME,
    SHARED_NAMESPACES,
    OperatorSettings,
    StackConfig,
)
from .errors import Problem, config_path, redact
from .flags import Inputs, extra_args_problems, layer_split_problems, split_mode
from .resolve import ResolvedModel, ResolvedService, ResolvedStack, cache_kind
from .sources import SourceError, on_node, parse_source

# A Hugging Face organisation or repository name (and not "." or "..", which would climb the URL's path).
HF_NAME: Final = re.compile(r"^(?!\.{1,2}(@|$))[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$")

# ext4 keeps 5% of a volume for root by default and the pod runs as non-root; ~1% more goes to metadata.
CACHE_HEADROOM: Final = Decimal("1.06")


def spec_problems(stack: ResolvedStack) -> list[Problem]:
    """Every problem of the effective specs of a stack's models and services, sorted."""
    problems: list[Problem] = namespace_problems(stack.config)
    for model in stack.models.values():
        problems += model_problems(model)
        problems += host_path_problems(model, stack.config.allow_host_path)
    for service in stack.services.values():
        problems += service_problems(service)
    return sorted(set(problems))


def namespace_problems(config: StackConfig) -> list[Problem]:
    """A namespace the stack must not take over: the cluster's own, or a shared one it would relabel."""
    problems = []
    if config.namespace in RESERVED_NAMESPACES:
        problems.append(
            Problem(
                "namespace",
                f"{config.namespace!r} is reserved for the cluster's own components (kube-system, kube-public, "
                "kube-node-lease); deploy into a namespace of your own",
            )
        )
    elif config.namespace in SHARED_NAMESPACES and config.create_namespace:
        problems.append(
            Problem(
                "namespace",
                f"{config.namespace!r} is shared by the whole cluster: creating it would set its Pod Security "
                "labels for everyone (and keep them after a destroy); set createNamespace: false to deploy into it "
                "as it is, or choose a namespace of your own",
            )
        )
    operator = config.operator
    if config.delivery == "operator" and operator.install and operator.namespace in RESERVED_NAMESPACES:
        problems.append(
            Problem(
                "operator.namespace",
                f"{operator.namespace!r} is reserved for the cluster's own components; install the operator in "
                "a namespace of its own (default llmkube-system)",
            )
        )
    if config.delivery == "operator" and operator.install:
        problems += served_namespace_problems(operator, stack_namespace=config.namespace)
    return problems


def served_namespace_problems(operator: OperatorSettings, *, stack_namespace: str | None) -> list[Problem]:
    """Where the controller is granted its writes (rbac, servedNamespaces): somewhere, and never the cluster's own
    namespaces. ``stack_namespace``: the namespace a stack adds to the served ones, None for an Operator alone."""
    served = operator.served_namespaces or []
    problems = [
        Problem(
            config_path("operator", "servedNamespaces", i),
            f"{ns!r} is reserved for the cluster's own components; the controller must not write there",
        )
        for i, ns in enumerate(served)
        if ns in RESERVED_NAMESPACES
    ]
    if operator.rbac == "clusterWide" and served:
        problems.append(
            Problem(
                "operator.servedNamespaces",
                f"{served} applies only with rbac namespaced; rbac clusterWide grants the controller its rights in "
                "every namespace: remove servedNamespaces, or set rbac: namespaced",
            )
        )
    elif operator.rbac == "namespaced" and not served and stack_namespace is None:
        problems.append(
            Problem(
                "operator.servedNamespaces",
                "none given: with rbac namespaced (the default) the controller may write only in the namespaces it "
                "serves; list the namespaces of its Models and InferenceServices, or set rbac: clusterWide to let "
                "it write in every namespace",
            )
        )
    return problems


def host_path_problems(model: ResolvedModel, allowed: bool) -> list[Problem]:
    """A model from a node path (hostPath) without the stack's explicit consent."""
    if allowed or not on_node(model.spec.source):
        return []
    return [
        Problem(
            config_path(model.path, "source"),
            f"{model.spec.source!r} is a path of the node, mounted as hostPath, which only a privileged "
            "namespace admits (any pod there could then mount the node's files); set llmkube:allowHostPath: "
            "true to accept that, or serve the model from a URL or a PersistentVolumeClaim (pvc://)",
        )
    ]


def model_problems(model: ResolvedModel) -> list[Problem]:
    """A source that names no file or carries a credential, further files outside the model's directory."""
    try:
        source = parse_source(model.spec.source)
    except SourceError as exc:
        return [Problem(config_path(model.path, "source"), str(exc))]
    where = config_path(model.path, "source")
    text = model.spec.source
    if source.scheme == "pvc":
        if not re.match(DNS_SUBDOMAIN_PATTERN, source.claim) or len(source.claim) > 253:
            return [
                Problem(where, f"{text!r}: the claim {source.claim!r} is not {PATTERN_HINTS[DNS_SUBDOMAIN_PATTERN]}")
            ]
        if not relative_inside(source.path):
            return [Problem(where, f"{text!r}: the path in the claim must be relative, without '..'")]
        return []
    if source.credentials:
        return [
            Problem(
                where,
                f"{redact(text)!r} carries a credential ({', '.join(source.credentials)}), which the Pulumi state, "
                "the pod spec and the download logs would keep; write the URL without user information or credential "
                "query parameters (token, access_token, sig, X-Amz-Signature, ...). For a private model, stage the "
                "file on a claim (pvc://) for now: a Secret whose keys become the downloader's environment "
                "(sourceSecretRef, as in LLMKube) is planned",
            )
        ]
    if source.scheme == "hf" and not all(HF_NAME.match(part) for part in text.split("://", 1)[1].split("/")[:2]):
        return [
            Problem(
                where,
                f"{text!r}: the organisation and repository must be Hugging Face names (letters, digits, '-', "
                "'_', '.'; not '.' or '..')",
            )
        ]
    if source.downloaded and (source.file_name in (".", "..") or not relative_inside(source.path.lstrip("/"))):
        return [Problem(where, f"{text!r}: the file name must not be '.' or '..', nor the path climb out with '..'")]
    files = model.spec.files or []
    return [
        Problem(
            config_path(model.path, "files", i),
            f"{rel!r} must be a path relative to the model file's directory, without '..'",
        )
        for i, rel in enumerate(files)
        if not relative_inside(rel)
    ] + [
        Problem(
            config_path(model.path, "fileSha256", key),
            f"{key!r} is not an entry of files ({', '.join(files) or 'none'}); key each digest by its file as "
            "files writes it",
        )
        for key in model.spec.file_sha256 or {}
        if key not in files
    ]


def relative_inside(rel: str) -> bool:
    """Whether ``rel`` is a path inside a directory: relative, not '.', never climbing out with '..'."""
    normal = posixpath.normpath(rel) if rel else ""
    return bool(rel) and not rel.startswith("/") and normal not in (".", "..") and not normal.startswith("../")


def service_problems(service: ResolvedService) -> list[Problem]:
    """A layerSplit the GPUs cannot use, extraArgs llama-server cannot take, a request above its limit."""
    problems = extra_args_problems(service.spec, service.path) + memory_request_problems(service)
    for field, labels in (("nodeSelector", service.spec.node_selector), ("podLabels", service.spec.pod_labels)):
        for key, value in (labels or {}).items():
            problem = label_problem(key, value)
            if problem:
                problems.append(Problem(config_path(service.path, field), problem))
    gpu = service.model.spec.hardware.gpu if service.model.spec.hardware else None
    sharding = gpu.sharding if gpu else None
    inputs = Inputs(service.spec, service.model.spec, "", service.gpu_count)
    if sharding is not None and sharding.layer_split and split_mode(inputs) not in (None, "none"):
        path = config_path(service.model.path, "hardware", "gpu", "sharding", "layerSplit")
        problems += layer_split_problems(sharding.layer_split, service.gpu_count, path)
    return problems


def planned_problems(stack: ResolvedStack, model_bytes: Mapping[str, int]) -> list[Problem]:
    """Problems that need what the planner read: (delivery direct) the model cache's size.

    ``model_bytes`` maps model names to the bytes of their files, where the planner knows them.
    """
    problems: list[Problem] = []
    if stack.delivery == "direct":
        cache = stack.config.model_cache
        kinds = {name: cache_kind(service, cache.mode) for name, service in stack.services.items()}
        shared = sorted({s.model.name for name, s in stack.services.items() if kinds[name] == "shared"})
        problems += cache_size_problems(cache.size, shared, model_bytes, SHARED_CACHE_PVC_NAME)
        for name, service in stack.services.items():
            if kinds[name] == "perService":
                claim = service.name + PER_SERVICE_CACHE_SUFFIX
                problems += cache_size_problems(cache.size, [service.model.name], model_bytes, claim)
    return sorted(set(problems))


def memory_request_problems(service: ResolvedService) -> list[Problem]:
    """hostMemory is the memory request and memory the limit: Kubernetes refuses a request above its limit."""
    resources = service.spec.resources
    if resources is None or not resources.host_memory or not resources.memory:
        return []
    if parse_quantity(resources.host_memory) <= parse_quantity(resources.memory):
        return []
    return [
        Problem(
            config_path(service.path, "resources", "hostMemory"),
            f"{resources.host_memory} is more than resources.memory {resources.memory}, the container's memory "
            "limit: Kubernetes refuses a request above its limit; raise memory or lower hostMemory",
        )
    ]


def minimum_cache_bytes(model_bytes: Iterable[int]) -> int:
    """The smallest cache that holds these model files: their sum plus CACHE_HEADROOM for the filesystem."""
    return int((Decimal(sum(model_bytes)) * CACHE_HEADROOM).to_integral_value(rounding=ROUND_CEILING))


def cache_size_problems(size: str, models: Iterable[str], model_bytes: Mapping[str, int], claim: str) -> list[Problem]:
    """The cache volume ``claim`` of ``size`` too small for the files of ``models`` the planner could size."""
    needed = sum(model_bytes.get(name, 0) for name in models)
    if needed <= 0:
        return []
    minimum = minimum_cache_bytes([needed])
    if parse_quantity(size) >= minimum:
        return []
    return [
        Problem(
            "modelCache.size",
            f"{size} is too small for the {format_bytes(needed)} of model files the cache {claim} must hold; "
            f"it needs at least {format_bytes(minimum)} (6% more, for the filesystem's root reserve and metadata); "
            "give a larger cache size",
        )
    ]
