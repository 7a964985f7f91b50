"""A multi-node service (multiNode, llama.cpp RPC): its workers' objects, and what a group adds to llama-server's pod.

Rank 0 runs llama-server (objects.deployment, with the service's Deployment and Service); each rank 1..size-1 runs
ggml-rpc-server in a Deployment ``<service>-rpc-<rank>`` of one pod, behind a headless Service of the same name.
llama-server uses the workers' devices through ``--rpc <service>-rpc-1.<namespace>.svc:<port>,...`` in rank order
(llama.cpp puts them before its own GPUs, the order of --tensor-split's shares), and its GPU flags count them
(ResolvedService.device_count).

How llama-server reaches a worker: the pod network and a headless Service, not hostNetwork. hostNetwork would
save the overlay's encapsulation on the activations' path, but the restricted and baseline Pod Security Standards
forbid it (the namespace would have to admit privileged pods) and it opens the port on the node's own
addresses. A headless Service (clusterIP None) resolves to the worker pod's own address, so no kube-proxy sits in
the path; llama.cpp's client resolves the name with gethostbyname and both ends speak IPv4 only
(ggml/src/ggml-rpc/transport.cpp: inet_addr on the server, AF_INET on the client), so the group needs IPv4 pod
addresses. The name is ``<worker>.<namespace>.svc``, which resolves whatever the cluster's domain.

ggml-rpc-server has no authentication and no encryption ("Never expose the RPC server to an open network!",
tools/rpc/rpc-server.cpp): whoever reaches its port can read and overwrite the tensors it holds and run graphs on
its devices. The workers' NetworkPolicy (network.worker_network_policy) admits only the service's llama-server
pods; with NetworkPolicies turned off the preview warns (network.multi_node_warnings).

Each worker serves one client at a time (its accept loop serves a connection to its end before accepting the
next), so a group is one replica (resolve refuses more, or an autoscaler), and llama-server is recreated, never
rolled: a second llama-server started beside the first would wait on workers the first still holds.

Every pod of a group carries the group label and a required anti-affinity against the group's other pods on
kubernetes.io/hostname: no two members share a node (the point of the group is the other nodes' memory). A
member's nodeName pins it through the node's kubernetes.io/hostname label, so the scheduler still checks its
resources and taints. The workers take the service's securityContexts (restricted unless the spec weakens them),
imagePullSecrets, priority and eviction protection; llama-server's own fields (env, volumes, probes, command,
args, podLabels, podAnnotations, affinity) are not theirs, and they mount nothing of the model.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Mapping
from typing import Any, Final

from ..api.base import label_problem
from ..api.service import DEFAULT_WORKER_COMMAND, MultiNodeSpec
from ..errors import Problem, config_path
from ..hardware import HardwareProfile
from ..meta import object_meta, restricted_container_security_context, sorted_by_key
from ..resolve import ResolvedService
from . import lifecycle
from .labels import (
    LABEL_COMPONENT,
    LABEL_GROUP,
    LABEL_RANK,
    WORKER_COMPONENT,
    member_labels,
    worker_labels,
    worker_name,
    worker_selector_labels,
)
from .overrides import mebibytes, memory_limit_for, pod_security_context_of, server_security_context
from .storage import DOWNLOADER_IMAGE, INIT_CONTAINER_RESOURCES

Manifest = dict[str, Any]

HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
LAYOUT_ANNOTATION: Final = "inference.llmkube.dev/group-layout"
WORKER_CONTAINER: Final = "ggml-rpc-server"
RPC_PORT_NAME: Final = "rpc"
WAIT_CONTAINER: Final = "wait-for-rpc-workers"
# ggml-rpc-server binds IPv4 only (inet_addr), and its default is 127.0.0.1, which no other pod can reach.
WORKER_BIND_ADDRESS: Final = "0.0.0.0"
# --cache keeps the tensors the worker receives under $LLAMA_CACHE/rpc, so that a restarted llama-server sends
# their hashes instead of the weights. tools/rpc/rpc-server.cpp reads LLAMA_CACHE first; without it, it would
# take $HOME/.cache (/.cache for the pod's uid, on the read-only root filesystem) and exit. An emptyDir: the
# cache lives as long as the worker's pod, on the node's disk, and holds at most the worker's share of the weights.
CACHE_VOLUME: Final = "rpc-cache"
CACHE_DIR: Final = "/rpc-cache"
# A worker the planner has not sized (its host memory is set with the plan): what ggml-rpc-server needs beside
# a GPU's buffers.
DEFAULT_WORKER_MEMORY: Final = 2**30

# Only a startup probe, never a readiness or liveness probe. ggml-rpc-server serves one client at a time and
# listens with a backlog of 1 (ggml/src/ggml-rpc/ggml-rpc.cpp, ggml_backend_rpc_start_server's accept loop;
# transport.cpp, listen(sockfd, 1)): while llama-server is connected, a probe's connection is queued and never
# accepted, fills the backlog, and times out, so a probe would mark a worker that is serving unready (or, as a
# liveness probe, restart it and break llama-server). Before llama-server connects, a TCP connect answers
# whether the server listens; the probe's connection closes without a byte, which the server drops quietly.
WORKER_STARTUP_PROBE: Final = {"periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 60}

# The wait of llama-server's pod for its workers: a TCP connection to each worker's port, made with curl, the
# one tool the downloader image is for. curl's telnet:// protocol opens a bare TCP connection (curl builds it
# unless configured --disable-telnet, which the official curl images are not: curl/curl-container's Makefile).
# Connected (%{num_connects} 1), curl sends nothing and holds the connection until --max-time, then closes it:
# the worker, waiting for its HELLO, drops it quietly and accepts the next client. curl exits 28 (timed out)
# then, so the test is the connect count, not the exit status.
WAIT_RETRY_SECONDS: Final = 2
WAIT_CONNECT_SECONDS: Final = 2
_WAIT_PREAMBLE: Final = """\
wait_for() {
  said=
  while :; do
    connects=$(curl --silent --output /dev/null --max-time "$connect" --write-out '%{num_connects}' \\
      "telnet://$1" </dev/null) && rc=0 || rc=$?
    [ "$connects" = 1 ] && break
    if [ "$rc" = 1 ]; then
      echo "llmkube: ERROR: this curl cannot open telnet:// connections (curl exit 1); use a downloader image" \\
        "whose curl supports telnet" >&2
      exit 1
    fi
    if [ -z "$said" ]; then
      echo "llmkube: waiting for ggml-rpc-server at $1 (curl exit $rc)"
      said=1
    fi
    sleep "$delay"
  done
  echo "llmkube: ggml-rpc-server at $1 accepts connections"
}
"""


# ---------------------------------------------------------------------------------------------------------
# The group
# ---------------------------------------------------------------------------------------------------------


def _multi_node(service: ResolvedService) -> MultiNodeSpec | None:
    multi = service.spec.multi_node
    if multi is not None and multi.is_auto:
        raise ValueError(
            f"{service.path}.multiNode.size is still auto: the planner decides the group's size before any builder runs"
        )
    return multi


def worker_ranks(service: ResolvedService) -> range:
    """The workers' ranks, 1..size-1; none for a single-node service (or a group of one)."""
    multi = _multi_node(service)
    return range(1, multi.size if multi is not None and isinstance(multi.size, int) else 1)


def is_group(service: ResolvedService) -> bool:
    """Whether the service runs with workers (multiNode of two nodes or more)."""
    return bool(worker_ranks(service))


def rpc_port(service: ResolvedService) -> int:
    """The port every worker's ggml-rpc-server listens on (multiNode.rendezvousPort)."""
    multi = _multi_node(service)
    assert multi is not None, "only a multi-node service has workers"
    return multi.port


def worker_address(service: ResolvedService, rank: int) -> str:
    """Where llama-server reaches a worker: its headless Service's name and the RPC port."""
    return f"{worker_name(service, rank)}.{service.namespace}.svc:{rpc_port(service)}"


def rpc_servers(service: ResolvedService) -> tuple[str, ...]:
    """llama-server's --rpc: every worker's address, in rank order; empty without workers."""
    return tuple(worker_address(service, rank) for rank in worker_ranks(service))


def worker_profile(service: ResolvedService, rank: int) -> HardwareProfile:
    """The hardware of a worker's node (its member's hardwareProfile, else the service's node)."""
    return service.worker_profiles[rank - 1]


def _pinned_node(service: ResolvedService, rank: int) -> str | None:
    multi = _multi_node(service)
    member = multi.member(rank) if multi is not None else None
    return member.node_name if member is not None else None


def member_node_selector(service: ResolvedService, rank: int, given: Mapping[str, str] | None) -> dict[str, str]:
    """A member's nodeSelector: ``given`` (the spec's for llama-server, the worker profile's for a worker), and the
    node's kubernetes.io/hostname when its member pins one (multiNode.members[].nodeName)."""
    node = _pinned_node(service, rank)
    return sorted_by_key({**(given or {}), **({HOSTNAME_LABEL: node} if node else {})})


def group_anti_affinity(service: ResolvedService) -> Manifest:
    """The required anti-affinity term every member's pod carries: no node runs two pods of the group."""
    return {"labelSelector": {"matchLabels": {LABEL_GROUP: service.name}}, "topologyKey": HOSTNAME_LABEL}


_REQUIRED: Final = "requiredDuringSchedulingIgnoredDuringExecution"


def _pinned_elsewhere(service: ResolvedService, rank: int) -> list[str]:
    """The nodes other members of the group are pinned to (multiNode.members[].nodeName)."""
    return sorted({node for r in range(0, _size(service)) if r != rank and (node := _pinned_node(service, r))})


def _size(service: ResolvedService) -> int:
    return len(worker_ranks(service)) + 1


def member_affinity(service: ResolvedService, given: Mapping[str, Any] | None, rank: int = 0) -> Manifest | None:
    """A member's affinity: ``given`` (llama-server's: the spec's) with the group's anti-affinity term added to its
    required pod anti-affinity terms, everything else kept; ``given`` as it is for a single-node service.

    An unpinned member also keeps off the nodes other members are pinned to (a required node affinity, NotIn):
    otherwise, when the pods are placed anew, it may take the node a pinned member needs, which then waits
    forever (the scheduler does not move running pods)."""
    if not is_group(service):
        return dict(given) if given is not None else None
    affinity: Manifest = copy.deepcopy(dict(given or {}))
    anti: Manifest = dict(affinity.get("podAntiAffinity") or {})
    anti[_REQUIRED] = [*(anti.get(_REQUIRED) or []), group_anti_affinity(service)]
    affinity["podAntiAffinity"] = sorted_by_key(anti)
    others = _pinned_elsewhere(service, rank)
    if others and _pinned_node(service, rank) is None:
        away = {"key": HOSTNAME_LABEL, "operator": "NotIn", "values": others}
        node: Manifest = dict(affinity.get("nodeAffinity") or {})
        required: Manifest = dict(node.get(_REQUIRED) or {})
        # The terms are ORed: the exclusion goes into each of them (or is the one term).
        terms = [dict(t) for t in required.get("nodeSelectorTerms") or [{}]]
        for term in terms:
            term["matchExpressions"] = [*(term.get("matchExpressions") or []), away]
        required["nodeSelectorTerms"] = [sorted_by_key(t) for t in terms]
        node[_REQUIRED] = sorted_by_key(required)
        affinity["nodeAffinity"] = sorted_by_key(node)
    return sorted_by_key(affinity)


def layout_annotation(service: ResolvedService) -> dict[str, str]:
    """What every member's pod template carries: the group's size and pins, so that a change of either replaces
    every member's pod together (a member moved onto another's node could not be scheduled while that one runs)."""
    if not is_group(service):
        return {}
    layout = ",".join(f"{r}={_pinned_node(service, r) or '*'}" for r in range(_size(service)))
    return {LAYOUT_ANNOTATION: layout}


def head_pod_labels(service: ResolvedService) -> dict[str, str]:
    """What llama-server's pod adds to its labels in a group (the group, rank 0); nothing for a single node."""
    return member_labels(service, 0) if is_group(service) else {}


def wait_script(
    addresses: tuple[str, ...] | list[str],
    *,
    connect_seconds: float = WAIT_CONNECT_SECONDS,
    retry_seconds: float = WAIT_RETRY_SECONDS,
) -> str:
    """The script of llama-server's wait for its workers: one ``wait_for`` line per worker, in rank order. The
    keyword arguments are for tests, which need not hold each connection for seconds."""
    header = f"set -eu\nconnect={connect_seconds} delay={retry_seconds}\n"
    return header + _WAIT_PREAMBLE + "".join(f"wait_for {shlex.quote(a)}\n" for a in addresses)


def head_init_containers(service: ResolvedService, image: str = DOWNLOADER_IMAGE) -> list[Manifest]:
    """llama-server's last init container in a group: it waits until every worker accepts a connection, since
    llama-server aborts when a worker does not answer as it starts (ggml-rpc.cpp, RPC_STATUS_ASSERT) and would
    crash-loop, backing off, until all are up; none for a single-node service."""
    addresses = rpc_servers(service)
    if not addresses:
        return []
    return [
        {
            "name": WAIT_CONTAINER,
            "image": image,
            "command": ["sh", "-c", wait_script(addresses)],
            "resources": copy.deepcopy(INIT_CONTAINER_RESOURCES),
            "securityContext": restricted_container_security_context(read_only_root_filesystem=True),
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
    ]


# ---------------------------------------------------------------------------------------------------------
# The workers
# ---------------------------------------------------------------------------------------------------------


def worker_resources(service: ResolvedService, rank: int) -> Manifest:
    """A worker's requests and limits: every GPU of its node's profile (request = limit), and the host memory the
    planner gave it (else DEFAULT_WORKER_MEMORY) as the request, with the server's headroom as the limit."""
    profile = worker_profile(service, rank)
    planned = service.worker_host_memory
    request = mebibytes(planned[rank - 1] if len(planned) >= rank else DEFAULT_WORKER_MEMORY)
    requests = {"memory": request}
    limits = {"memory": memory_limit_for(request)}
    resource = profile.gpu_resource_name
    if resource is not None and profile.gpu_count:
        requests[resource] = limits[resource] = str(profile.gpu_count)
    return {"limits": sorted_by_key(limits), "requests": sorted_by_key(requests)}


def worker_args(multi: MultiNodeSpec) -> list[str]:
    """ggml-rpc-server's arguments: all the pod's IPv4 addresses, the group's port, --cache unless turned off."""
    return ["--host", WORKER_BIND_ADDRESS, "--port", str(multi.port), *(["--cache"] if multi.cache_on else [])]


def worker_deployment(service: ResolvedService, rank: int) -> Manifest:
    """The Deployment ``<service>-rpc-<rank>``: one pod running ggml-rpc-server on the worker's node."""
    multi = _multi_node(service)
    assert multi is not None and rank in worker_ranks(service), f"rank {rank} is no worker of {service.name}"
    spec = service.spec
    profile = worker_profile(service, rank)
    labels = worker_labels(service, rank)
    container_context = server_security_context(service)
    volumes: list[Manifest] = []
    mounts: list[Manifest] = []
    container: Manifest = {
        "name": WORKER_CONTAINER,
        "image": multi.worker_image or spec.image,
        "command": list(multi.worker_command or DEFAULT_WORKER_COMMAND),
        "args": worker_args(multi),
        "ports": [{"name": RPC_PORT_NAME, "containerPort": multi.port, "protocol": "TCP"}],
        # Why a startup probe only: WORKER_STARTUP_PROBE.
        "startupProbe": {"tcpSocket": {"port": RPC_PORT_NAME}, **WORKER_STARTUP_PROBE},
        "resources": worker_resources(service, rank),
        "securityContext": container_context,
        # ggml-rpc-server prints why it stopped (no device found, the port taken) to its log.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if multi.cache_on:
        container["env"] = [{"name": "LLAMA_CACHE", "value": CACHE_DIR}]
        volumes.append({"name": CACHE_VOLUME, "emptyDir": {}})
        mounts.append({"name": CACHE_VOLUME, "mountPath": CACHE_DIR})
    if container_context.get("readOnlyRootFilesystem"):
        # A writable /tmp, as programs expect one, on the read-only root filesystem (as llama-server's).
        volumes.append({"name": "tmp", "emptyDir": {}})
        mounts.append({"name": "tmp", "mountPath": "/tmp"})
    if mounts:
        container["volumeMounts"] = mounts

    pod: Manifest = {
        # ggml-rpc-server never talks to the API server: no token in the pod.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context_of(service),
        "containers": [container],
        "affinity": member_affinity(service, None, rank),
    }
    if volumes:
        pod["volumes"] = volumes
    node_selector = member_node_selector(service, rank, profile.node_selector)
    if node_selector:
        pod["nodeSelector"] = node_selector
    if profile.tolerations:
        pod["tolerations"] = [t.wire() for t in profile.tolerations]
    if spec.runtime_class_name and profile.gpu_count:
        # The service's runtime class is for its GPUs (the NVIDIA container runtime, say); a CPU worker's node
        # may not offer it.
        pod["runtimeClassName"] = spec.runtime_class_name
    priority_class_name = lifecycle.pod_priority_class_name(service)
    if priority_class_name:
        pod["priorityClassName"] = priority_class_name
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [s.wire() for s in spec.image_pull_secrets]

    template_meta: Manifest = {"labels": labels}
    annotations = {**lifecycle.eviction_annotations(service), **layout_annotation(service)}
    if annotations:
        template_meta["annotations"] = sorted_by_key(annotations)
    deployment_spec: Manifest = {
        "selector": {"matchLabels": worker_selector_labels(service, rank)},
        # One pod per worker, and a new one only after the old one is gone: its GPUs, its node (the group's
        # anti-affinity) and its one client are not shared.
        "strategy": {"type": "Recreate"},
        "template": {"metadata": template_meta, "spec": pod},
    }
    replicas = lifecycle.replicas(service, 1)  # 0 while suspended, as llama-server's
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    if spec.revision_history_limit is not None:
        deployment_spec["revisionHistoryLimit"] = spec.revision_history_limit
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(worker_name(service, rank), service.namespace, labels),
        "spec": deployment_spec,
    }


def worker_service(service: ResolvedService, rank: int) -> Manifest:
    """The headless Service ``<service>-rpc-<rank>``: the worker pod's address under a stable name."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(worker_name(service, rank), service.namespace, worker_labels(service, rank)),
        "spec": {
            "clusterIP": "None",
            "selector": worker_selector_labels(service, rank),
            "ports": [
                {"name": RPC_PORT_NAME, "port": rpc_port(service), "targetPort": RPC_PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


def worker_manifests(service: ResolvedService) -> list[Manifest]:
    """Every worker's headless Service and Deployment, in rank order; none for a single-node service."""
    return [
        m for rank in worker_ranks(service) for m in (worker_service(service, rank), worker_deployment(service, rank))
    ]


def worker_rank(manifest: Mapping[str, Any]) -> int | None:
    """The rank of a worker's object (its Deployment, its Service), None for any other object."""
    labels = manifest.get("metadata", {}).get("labels") or {}
    if manifest.get("kind") not in ("Deployment", "Service") or labels.get(LABEL_COMPONENT) != WORKER_COMPONENT:
        return None
    return int(labels[LABEL_RANK])


def group_problems(service: ResolvedService) -> list[Problem]:
    """A pinned node name that cannot be matched: nodeSelector takes label values only, and kubernetes.io/hostname
    holds the node's name. (The workers' names fit: a service name has at most api.base.NAME_MAX, 50 characters,
    and ``-rpc-15`` and ``-rpc-workers`` keep them within the 63 of a Service name and a label value.)"""
    multi = service.spec.multi_node
    members = (multi.members if multi is not None else None) or []
    problems: list[Problem] = []
    for index, member in enumerate(members):
        problem = label_problem(HOSTNAME_LABEL, member.node_name) if member.node_name else None
        if problem:
            at = config_path(service.path, "multiNode", "members", index, "nodeName")
            problems.append(Problem(at, problem))
    return problems
