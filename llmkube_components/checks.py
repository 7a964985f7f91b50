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
    Delivery,
    OperatorSettings,
    StackConfig,
)
from .errors import Problem, config_path, redact
from .flags import (
    Inputs,
    extra_args_problems,
    layer_split_problems,
    metadata_overrides_problems,
    rope_scaling_problems,
    split_mode,
)
from .resolve import ResolvedModel, ResolvedService, ResolvedStack, cache_kind
from .sources import ModelSource, SourceError, is_url, on_node, parse_source

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
    problems += prefetch_problems(stack)
    problems += observability_problems(stack)
    for service in stack.services.values():
        problems += service_problems(service)
        problems += delivery_problems(service, stack.delivery)
    return sorted(set(problems))


def observability_problems(stack: ResolvedStack) -> list[Problem]:
    """What llmkube:observability asks that cannot work: two ways of scraping at once (every series twice), pod
    annotations or KEDA in delivery operator (the controller makes the pods and its own HPA), KEDA without a
    Prometheus to ask, scale to zero without KEDA or with only cpu/memory to wake on, bad monitor labels."""
    settings = stack.config.observability
    problems: list[Problem] = []
    chosen = [
        name
        for name, on in (
            ("podMonitor", settings.pod_monitor),
            ("serviceMonitor", settings.service_monitor),
            ("scrapeAnnotations", settings.scrape_annotations),
        )
        if on
    ]
    for name in chosen[1:]:
        problems.append(
            Problem(
                config_path("observability", name),
                f"true together with {chosen[0]}: choose one way of scraping (both would scrape every pod and "
                "store every series twice)",
            )
        )
    operator = stack.delivery == "operator"
    if operator and settings.scrape_annotations:
        problems.append(
            Problem(
                config_path("observability", "scrapeAnnotations"),
                "true, but with delivery operator the controller makes the pods and no annotation of ours reaches "
                "them; use podMonitor or serviceMonitor",
            )
        )
    if operator and settings.autoscaler == "keda":
        problems.append(
            Problem(
                config_path("observability", "autoscaler"),
                "'keda', but with delivery operator the controller makes each service's HPA, which a "
                "ScaledObject's would fight; use prometheusAdapter (or hpa) with delivery operator",
            )
        )
    if settings.prometheus_service_account is not None and not (operator and stack.config.operator.install):
        problems.append(
            Problem(
                config_path("observability", "prometheusServiceAccount"),
                "set, but it is only for the controller's metrics, which a stack has with delivery operator and "
                "operator.install true",
            )
        )
    for key, value in (settings.monitor_labels or {}).items():
        why = label_problem(key, value)
        if why is not None:
            problems.append(Problem(config_path("observability", "monitorLabels", key), why))
    for key in sorted(settings.wake_queries or {}):
        service = next((s for s in stack.services.values() if s.key == key), None)
        path = config_path("observability", "wakeQueries", key)
        if settings.autoscaler != "keda":
            problems.append(
                Problem(
                    path, f"set, but wake queries are KEDA triggers: autoscaler is {settings.autoscaler!r}, not 'keda'"
                )
            )
        elif service is None:
            names = ", ".join(sorted(s.key for s in stack.services.values())) or "none"
            problems.append(Problem(path, f"{key!r} names no service; services are: {names}"))
        elif service.spec.autoscaling is None:
            problems.append(Problem(path, f"set, but services.{key} has no autoscaling, so no ScaledObject to wake"))
    scaled = [s for s in stack.services.values() if s.spec.autoscaling is not None]
    if settings.autoscaler == "keda" and settings.prometheus_url is None and scaled:
        names = ", ".join(s.key for s in scaled)
        problems.append(
            Problem(
                config_path("observability", "prometheusUrl"),
                f"unset, but autoscaler 'keda' asks Prometheus for the metrics of {names}: give the URL KEDA "
                "reaches it at, e.g. http://prometheus-operated.monitoring.svc:9090",
            )
        )
    for service in scaled:
        autoscaling = service.spec.autoscaling
        if autoscaling is None or autoscaling.min_replicas != 0:
            continue
        path = config_path(service.path, "autoscaling", "minReplicas")
        if settings.autoscaler != "keda":
            problems.append(
                Problem(
                    path,
                    f"0 (scale to zero) needs observability.autoscaler 'keda' (an HPA keeps at least one pod), not "
                    f"{settings.autoscaler!r}; or 1-10",
                )
            )
        elif autoscaling.metrics and all(m.type == "Resource" for m in autoscaling.metrics):
            problems.append(
                Problem(
                    path,
                    "0, but every metric is a Resource (cpu, memory), which KEDA cannot scale up from zero: "
                    "add a Pods metric, or 1-10",
                )
            )
    return problems


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
    if config.delivery == "operator":
        problems += secret_read_problems(config)
    return problems


def secret_read_problems(config: StackConfig) -> list[Problem]:
    """An s3:// source the controller we install cannot read the credentials of: it reads sourceSecretRef through
    its cache, which needs every Secret of the cluster; that right is never granted unasked."""
    operator = config.operator
    if not operator.install or "secretReads" in (operator.grants or ()):
        return []
    return [
        Problem(
            config_path("models", key, "sourceSecretRef"),
            f"{model.source_secret_ref.name!r}: in delivery operator the LLMKube controller reads the credentials "
            "of an s3:// source itself, through a cache that lists and watches every Secret in the cluster; grant "
            "that with llmkube:operator.grants [secretReads], or use delivery direct, where only the model's "
            "download container gets the Secret",
        )
        for key, model in config.models.items()
        if model.source_secret_ref is not None and model.source.lower().startswith("s3://")
    ]


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
                "query parameters (token, access_token, sig, X-Amz-Signature, ...). For a private model, name a "
                "Secret in sourceSecretRef whose keys become the downloader's environment (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY for s3://, HF_TOKEN for Hugging Face), or stage the file on a claim (pvc://)",
            )
        ]
    if source.scheme == "hf" and not all(HF_NAME.match(part) for part in text.split("://", 1)[-1].split("/")[:2]):
        return [
            Problem(
                where,
                f"{text!r}: the organisation and repository must be Hugging Face names (letters, digits, '-', "
                "'_', '.'; not '.' or '..')",
            )
        ]
    if source.downloaded and (source.file_name in (".", "..") or not relative_inside(source.path.lstrip("/"))):
        return [Problem(where, f"{text!r}: the file name must not be '.' or '..', nor the path climb out with '..'")]
    staged = source_layout_problems(model, source)
    if staged:
        return staged
    files = model.spec.files or []
    mmproj = model.spec.mmproj
    return (
        mmproj_problems(model, source)
        + [
            Problem(
                config_path(model.path, "files", i),
                f"{rel!r} must be a path relative to the model file's directory, without '..'",
            )
            for i, rel in enumerate(files)
            if not relative_inside(rel)
        ]
        + [
            Problem(
                config_path(model.path, "fileSha256", key),
                f"{key!r} is not an entry of files ({', '.join(files) or 'none'})"
                + (f" nor the mmproj {mmproj!r}" if mmproj else "")
                + "; key each digest by its file as files writes it",
            )
            for key in model.spec.file_sha256 or {}
            if key not in files and key != mmproj
        ]
    )


# An S3 bucket name (the rules of general purpose buckets): 3-63 lower-case letters, digits, '.' and '-'.
S3_BUCKET: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def source_layout_problems(model: ResolvedModel, source: ModelSource) -> list[Problem]:
    """A source that cannot say which file llama.cpp loads: a repository without files, an s3:// prefix whose
    key names a file, a bucket S3 would refuse."""
    where = config_path(model.path, "source")
    text = model.spec.source
    files = model.spec.files or []
    if source.repository and not files:
        return [
            Problem(
                where,
                f"{text!r} names no file; llama.cpp loads one GGUF file: write owner/name/<file>.gguf (or "
                "hf://<org>/<repo>/<file>.gguf), or list the repository's files in files (the first is the model "
                "file)",
            )
        ]
    if source.scheme != "s3":
        return []
    if not S3_BUCKET.match(source.host):
        return [Problem(where, f"{text!r}: {source.host!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")]
    if files and source.file_name.lower().endswith(".gguf"):
        return [
            Problem(
                where,
                f"{text!r} names a file, but with files an s3:// source is the prefix they are under (the first "
                "of files is the model file, as in LLMKube): write s3://<bucket>/<prefix> and list every file in "
                "files",
            )
        ]
    return []


def mmproj_problems(model: ResolvedModel, source: ModelSource) -> list[Problem]:
    """An mmproj that cannot be staged beside the model: a path climbing out, a URL that is not downloaded or
    carries a credential, a name the model file already has."""
    mmproj = model.spec.mmproj
    if not mmproj:
        return []
    where = config_path(model.path, "mmproj")
    if not is_url(mmproj):
        if not relative_inside(mmproj):
            return [
                Problem(where, f"{mmproj!r} must be a path relative to the model's directory, without '..', or a URL")
            ]
        name = posixpath.normpath(mmproj)
    else:
        try:
            companion = parse_source(mmproj)
        except SourceError as exc:
            return [Problem(where, str(exc))]
        if not companion.downloaded or companion.repository or source.scheme == "pvc":
            return [
                Problem(
                    where,
                    f"{redact(mmproj)!r}: an mmproj URL is downloaded beside the model: give an http(s)://, hf:// or "
                    "s3:// URL of the file (a pvc:// model's mmproj is a path in its claim, beside the model file)",
                )
            ]
        if companion.credentials:
            return [
                Problem(
                    where,
                    f"{redact(mmproj)!r} carries a credential ({', '.join(companion.credentials)}); give credentials "
                    "in the Secret of sourceSecretRef",
                )
            ]
        name = companion.file_name
    layout_main = (model.spec.files or [source.file_name])[0] if source.names_directory(model.spec.files) else None
    main = posixpath.normpath(layout_main) if layout_main else source.file_name
    if name == main:
        return [Problem(where, f"{mmproj!r} would be staged as {name}, the model file's own name; rename one")]
    return []


def speculative_problems(service: ResolvedService) -> list[Problem]:
    """A draftModel that is not a file the served Model stages."""
    speculative = service.spec.speculative_decoding
    if speculative is None or not speculative.draft_model:
        return []
    files = [posixpath.normpath(f) for f in service.model.spec.files or []]
    if relative_inside(speculative.draft_model) and posixpath.normpath(speculative.draft_model) in files:
        return []
    return [
        Problem(
            config_path(service.path, "speculativeDecoding", "draftModel"),
            f"{speculative.draft_model!r} is not in models.{service.model.key}.files "
            f"({', '.join(service.model.spec.files or []) or 'none'}): list it there, so that it is downloaded "
            "beside the model, or give the draft model as a Model of its own (draftModelRef)",
        )
    ]


def skip_init_problems(service: ResolvedService) -> list[Problem]:
    """skipModelInit on an emptyDir: nothing ever puts the model there."""
    cache = service.spec.model_cache
    if not service.spec.skip_model_init or cache is None or cache.persistence != "Ephemeral" or cache.claim_name:
        return []
    return [
        Problem(
            config_path(service.path, "skipModelInit"),
            "true with modelCache.persistence Ephemeral: the pod's emptyDir starts empty and nothing would put the "
            "model there; keep the download (remove skipModelInit) or read a cache filled ahead (the shared cache, "
            "with models.<m>.prefetch, or modelCache.claimName)",
        )
    ]


def prefetch_problems(stack: ResolvedStack) -> list[Problem]:
    """prefetch where delivery direct cannot honour it: its Job fills the shared cache, with a download."""
    if stack.delivery != "direct":
        return []
    problems = []
    for model in stack.models.values():
        if not model.spec.prefetch:
            continue
        where = config_path(model.path, "prefetch")
        try:
            source = parse_source(model.spec.source)
        except SourceError:
            continue  # reported by model_problems
        if not source.downloaded:
            problems.append(
                Problem(
                    where,
                    f"true, but {model.spec.source!r} is not downloaded (prefetch fetches http(s)://, hf://, s3:// "
                    "and repository sources into the shared cache): remove prefetch",
                )
            )
        elif stack.config.model_cache.mode != "shared":
            problems.append(
                Problem(
                    where,
                    f"true, but modelCache.mode is {stack.config.model_cache.mode}: prefetch fills the shared cache "
                    f"{SHARED_CACHE_PVC_NAME}, which no service of this stack reads; set modelCache.mode shared, or "
                    "remove prefetch",
                )
            )
    return problems


def relative_inside(rel: str) -> bool:
    """Whether ``rel`` is a path inside a directory: relative, not '.', never climbing out with '..'."""
    normal = posixpath.normpath(rel) if rel else ""
    return bool(rel) and not rel.startswith("/") and normal not in (".", "..") and not normal.startswith("../")


def service_problems(service: ResolvedService) -> list[Problem]:
    """A layerSplit the GPUs cannot use, extraArgs llama-server cannot take, a request above its limit."""
    problems = extra_args_problems(service.spec, service.path) + memory_request_problems(service)
    problems += speculative_problems(service) + skip_init_problems(service)
    problems += rope_scaling_problems(service.spec, service.path)
    problems += metadata_overrides_problems(service.spec, service.path)
    for field, labels in (("nodeSelector", service.spec.node_selector), ("podLabels", service.spec.pod_labels)):
        for key, value in (labels or {}).items():
            problem = label_problem(key, value)
            if problem:
                problems.append(Problem(config_path(service.path, field), problem))
    gpu = service.model.spec.hardware.gpu if service.model.spec.hardware else None
    sharding = gpu.sharding if gpu else None
    inputs = Inputs(service.spec, service.model.spec, "", service.device_count)
    if sharding is not None and sharding.layer_split and split_mode(inputs) not in (None, "none"):
        path = config_path(service.model.path, "hardware", "gpu", "sharding", "layerSplit")
        problems += layer_split_problems(sharding.layer_split, service.device_count, path)
    problems += tensor_split_problems(service)
    return problems


def tensor_split_problems(service: ResolvedService) -> list[Problem]:
    """A service's tensorSplit: one share per GPU of a layer or row split (with multiNode, per device: the
    workers' first), not all zero."""
    shares = service.spec.tensor_split
    devices = service.device_count
    what = f"{devices} GPUs" if devices == service.gpu_count else f"{devices} devices (its workers' and its own GPUs)"
    if not shares:
        return []
    path = config_path(service.path, "tensorSplit")
    inputs = Inputs(service.spec, service.model.spec, "", service.device_count)
    if split_mode(inputs) in (None, "none"):
        return [
            Problem(
                path,
                f"{shares} is not used: the service runs on {service.gpu_count} GPU(s) without a layer or row "
                "split; leave tensorSplit unset",
            )
        ]
    if len(shares) != devices:
        return [
            Problem(
                path,
                f"{shares} has {len(shares)} entries, but the service runs on {what}; give one share per "
                f"{'GPU' if devices == service.gpu_count else 'device'} (a layer count such as 22, or a proportion)",
            )
        ]
    if not any(shares):
        return [Problem(path, f"{shares} gives no GPU a share; at least one must be above 0")]
    return []


# A MIG profile as NVIDIA names them (1g.10gb, 3g.40gb): the operator's check, and what makes a resource name.
MIG_PROFILE: Final = re.compile(r"^[0-9]+g\.[0-9]+gb$")


def delivery_problems(service: ResolvedService, delivery: Delivery) -> list[Problem]:
    """Fields the delivery cannot honour: lifecycle settings that need the operator's controller (delivery
    direct), and GPU sharing the GPUs, or the operator as we install it, cannot give."""
    spec = service.spec
    path = service.path
    problems: list[Problem] = []
    if delivery == "direct":
        if spec.rollout_policy is not None and spec.rollout_policy.wait_for_idle:
            problems.append(
                Problem(
                    config_path(path, "rolloutPolicy", "waitForIdle"),
                    "true needs delivery operator: only its controller watches llama-server's /slots and holds a "
                    "rollout until no request is in flight; with delivery direct the pods are replaced as soon as "
                    "the update applies (rolloutPolicy.force). Remove it, or use llmkube:delivery operator",
                )
            )
        for field, value in (
            ("maxPodLifetimeSeconds", spec.max_pod_lifetime_seconds),
            ("maxPodLifetimeIdleTimeoutSeconds", spec.max_pod_lifetime_idle_timeout_seconds),
        ):
            if value is not None:
                problems.append(
                    Problem(
                        config_path(path, field),
                        f"{value} needs delivery operator: Kubernetes has no lifetime for a Deployment's pods (the "
                        "API server refuses activeDeadlineSeconds in a Deployment's pod template, and it would fail "
                        "the pod, not replace it); the operator's controller evicts expired pods one at a time. "
                        "Remove it, or use llmkube:delivery operator",
                    )
                )
        if spec.slo is not None and spec.slo.indicator == "latency":
            problems.append(
                Problem(
                    config_path(path, "slo", "indicator"),
                    "latency needs a request latency histogram, which llama-server does not export (its /metrics "
                    "has token counters and requests in flight, no per-request durations); use indicator "
                    "availability",
                )
            )
    if spec.slo is not None and spec.slo.name is not None and not re.match(DNS_SUBDOMAIN_PATTERN, spec.slo.name):
        problems.append(
            Problem(
                config_path(path, "slo", "name"),
                f"{spec.slo.name!r} is not {PATTERN_HINTS[DNS_SUBDOMAIN_PATTERN]}",
            )
        )
    return problems + gpu_sharing_problems(service, delivery)


def gpu_sharing_problems(service: ResolvedService, delivery: Delivery) -> list[Problem]:
    """resources.gpuSharing the GPUs cannot give: MIG partitions are NVIDIA's and replace the GPU resource; the
    operator (v0.9.19) also wants exactly one GPU, and a shared-pool node selector we do not configure."""
    sharing = service.spec.resources.gpu_sharing if service.spec.resources else None
    mode = sharing.mode if sharing is not None else None
    if sharing is None or mode in (None, "exclusive"):
        return []
    where = config_path(service.path, "resources", "gpuSharing", "mode")
    hardware = service.model.spec.hardware
    gpu = hardware.gpu if hardware else None
    vendor = (gpu.vendor if gpu else None) or (service.profile.gpu.vendor if service.profile.gpu else None) or "nvidia"
    problems: list[Problem] = []
    if mode == "partitioned":
        if vendor != "nvidia":
            problems.append(
                Problem(where, f"partitioned is NVIDIA's MIG; the GPU vendor is {vendor}: use exclusive or shared")
            )
        if sharing.profile and not MIG_PROFILE.match(sharing.profile):
            problems.append(
                Problem(
                    config_path(service.path, "resources", "gpuSharing", "profile"),
                    f"{sharing.profile!r} is not a MIG profile such as 1g.10gb (<compute>g.<memory>gb)",
                )
            )
        if gpu is not None and gpu.resource_name and not gpu.resource_name.startswith("nvidia.com/mig-"):
            problems.append(
                Problem(
                    where,
                    f"partitioned requests nvidia.com/mig-{sharing.profile}, but the model's hardware.gpu."
                    f"resourceName is {gpu.resource_name}: remove one of the two",
                )
            )
    if gpu is not None and gpu.resource_claims:
        problems.append(
            Problem(where, f"{mode} shares device-plugin GPUs; the model's GPUs are DRA resourceClaims: use exclusive")
        )
    if delivery == "operator":
        if service.gpu_count != 1:
            problems.append(
                Problem(
                    where,
                    f"{mode} with {service.gpu_count} GPUs: the LLMKube operator (v0.9.19) fails a shared or "
                    "partitioned service unless it has exactly 1 GPU; set resources.gpu: 1",
                )
            )
        if mode == "shared" and vendor != "amd":
            problems.append(
                Problem(
                    where,
                    "shared needs the LLMKube operator's --gpu-sharing-shared-pool-selector, which the operator "
                    "llmkube installs does not set, so the operator would fail the service; use delivery direct "
                    "(the device plugin's shared GPU resource), or exclusive",
                )
            )
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
