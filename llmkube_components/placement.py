"""Will the cluster's nodes run each service? Judged at preview, against the nodes the stack's provider targets.

The orchestration of the node check: read the cluster once per stack (``cluster_view``), then judge each
service's pod as built (``scheduling``). No Pulumi here: the components pass in the provider's kubeconfig
settings and log what comes back. A check never fails a preview: whatever goes wrong is an info line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import cluster
from .errors import Problem
from .meta import PART_OF
from .resolve import ResolvedService, ResolvedStack
from .workloads import LABEL_SERVICE
from .workloads.labels import worker_name

NODE_READ_TIMEOUT = 5.0


@dataclass(frozen=True)
class ClusterTarget:
    """The cluster the stack's Kubernetes provider targets: its kubernetes: config, and the environment."""

    kubeconfig: str | None = None
    context: str | None = None
    cluster_name: str | None = None
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)  # KUBECONFIG, exec plugins' env


@dataclass
class ClusterView:
    """The nodes of the cluster a stack deploys to, and what room they have left (None: pods not readable)."""

    nodes: list[cluster.Node]
    room: cluster.Room | None


class Scheduling(NamedTuple):
    text: str  # the service's `scheduling` output
    pending: bool  # no room for its pods: said as a warning, and not awaited


@dataclass
class Notes:
    """What a check has to say: info lines (a check that could not run) and warnings (pods that stay Pending)."""

    infos: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def open_reader(target: ClusterTarget, notes: Notes) -> cluster.ClusterReader | None:
    """A reader of the target cluster for the checks of one stack, or None (said in ``notes``)."""
    try:
        return cluster.ClusterReader(
            target.kubeconfig,
            target.context,
            NODE_READ_TIMEOUT,
            cluster_name=target.cluster_name,
            environ=target.environ,
        )
    except cluster.ClusterUnavailable as exc:
        notes.infos.append(f"cluster not checked (nodes, namespaces): {exc.message}")
    except Exception as exc:  # a check must never fail the preview
        notes.infos.append(f"cluster not checked (nodes, namespaces): {type(exc).__name__}: {exc}")
    return None


def foreign_namespaces(created: Mapping[str, str], reader: cluster.ClusterReader, notes: Notes) -> list[Problem]:
    """Namespaces the stack would create (config path -> name) that exist and are not llmkube's.

    Creating an existing namespace applies our labels over its own (the Pulumi provider upserts): its Pod
    Security would change under whatever else runs there, and our labels would stay after a destroy. A
    namespace an llmkube stack made (part-of llmkube, kept by an earlier destroy) is adopted as before.
    """
    try:
        found = {path: (name, reader.namespace_labels(name)) for path, name in created.items()}
    except cluster.ClusterUnavailable as exc:
        notes.infos.append(f"namespace ownership not checked: {exc.message}")
        return []
    except Exception as exc:  # a check that cannot run must not fail the preview
        notes.infos.append(f"namespace ownership not checked: {type(exc).__name__}: {exc}")
        return []
    fixes = {
        "namespace": "set createNamespace false to deploy into it as it is, or choose another namespace",
        "operator.namespace": "choose another operator.namespace, or install false if LLMKube runs there already",
    }
    return [
        Problem(
            path,
            f"{name!r} exists and was not created by llmkube (no app.kubernetes.io/part-of={PART_OF} label); a "
            f"stack never relabels a namespace it did not create: {fixes.get(path, fixes['namespace'])}",
        )
        for path, (name, labels) in found.items()
        if labels is not None and labels.get("app.kubernetes.io/part-of") != PART_OF
    ]


def cluster_view(stack: ResolvedStack, reader: cluster.ClusterReader, notes: Notes) -> ClusterView | None:
    """The cluster the stack deploys to, or None when its nodes cannot be read (said in ``notes``).

    Pods that cannot be listed (a 403, say) leave the room unknown: services are then judged by the nodes'
    allocatable resources only.
    """
    try:
        nodes = reader.nodes()
    except cluster.ClusterUnavailable as exc:
        notes.infos.append(f"nodes not checked: {exc.message}")
        return None
    except Exception as exc:  # a check must never fail the preview
        notes.infos.append(f"nodes not checked: {type(exc).__name__}: {exc}")
        return None
    try:
        pods = reader.pods()
    except cluster.ClusterUnavailable as exc:
        notes.infos.append(f"room on the nodes not checked: {exc.message}")
        return ClusterView(nodes, None)
    # A multi-node service's workers are its pods too (their Deployments are named <service>-rpc-<rank>).
    ours = {s.name for s in stack.services.values()}
    ours |= {worker_name(s, r) for s in stack.services.values() for r in range(1, (s.group_size or 1))}

    def owner_of(pod: cluster.Pod) -> str | None:
        # This stack's own pods, by the labels both deliveries' Deployments select on.
        if pod.namespace != stack.namespace:
            return None
        for key in (LABEL_SERVICE, "app"):
            if pod.labels.get(key) in ours:
                return pod.labels[key]
        return None

    return ClusterView(nodes, cluster.Room(nodes, pods, owner_of))


def scheduling(
    service: ResolvedService, manifests: list[dict[str, Any]], view: ClusterView, notes: Notes
) -> Scheduling | None:
    """Where the service's pods can run: "fits: <nodes>", or "Pending: <why not>" (a warning).

    Judged on the pod we render; with delivery operator the controller's pod asks the same resources, node
    selector and tolerations. First against each node's allocatable resources; then, when the pods could be
    read, against what the pods already there and this stack's earlier services leave (in config order), for
    every replica (the HPA's minReplicas with autoscaling).
    """
    try:
        # llama-server's Deployment first, then a multi-node group's workers (service_workloads' order): each
        # member on a node no earlier member has (their required anti-affinity).
        deployments = [m for m in manifests if m["kind"] == "Deployment"]
        hpa = next((m for m in manifests if m["kind"] == "HorizontalPodAutoscaler"), None)
        replicas = hpa["spec"]["minReplicas"] if hpa else deployments[0]["spec"].get("replicas", 1)
        group = len(deployments) > 1
        fits: list[str] = []
        why: str | None = None
        members: list[str] = []  # a group's nodes, one per member in rank order
        for rank, deployment in enumerate(deployments):
            pod = deployment["spec"]["template"]["spec"]
            name = deployment["metadata"]["name"]
            why = cluster.why_unschedulable(pod, view.nodes)
            if why is None and view.room is not None:
                label = f"{service.namespace}/{name} (this stack)"
                fits, why = view.room.place(pod, replicas, name, label, exclude=members)
            elif why is None:
                nodes = [n for n in view.nodes if n.name not in members]
                fits = [node.name for node in nodes if cluster.why_unschedulable(pod, [node]) is None]
                if not fits:
                    taken = "; ".join(f"{m}: runs another member of its group" for m in members)
                    why = f"no node is left for it: {taken}"
            if why is not None:
                if group:
                    why = f"{'llama-server' if rank == 0 else f'its rank {rank} worker {name}'}: {why}"
                break
            members.extend(fits[:1])  # none with replicas 0
    except Exception as exc:  # a check must never fail the preview
        notes.infos.append(f"nodes not checked for {service.name}: {type(exc).__name__}: {exc}")
        return None
    if replicas == 0:
        return Scheduling("no pods (replicas: 0)", pending=False)
    if why is None and group:
        return Scheduling("fits: " + ", ".join(f"{n} (rank {r})" for r, n in enumerate(members)), pending=False)
    if why is None:
        return Scheduling(f"fits: {', '.join(fits)}", pending=False)
    message = f"its pod will stay Pending, {why}; deployed without waiting for it (an autoscaler may add a node)"
    notes.warnings.append(str(Problem(service.path, message)))
    return Scheduling(f"Pending: {why}", pending=True)
