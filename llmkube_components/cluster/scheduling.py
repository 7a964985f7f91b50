"""Would a pod fit a node? The scheduler's filters, as far as our pods vary: node selector, required node
affinity, taints, allocatable resources, and the room the pods already on each node leave.

Pure: nodes and pods come in as data (``client.ClusterReader`` reads them), answers go out as text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ..api.base import parse_quantity
from ..api.core import tolerates

_UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
_GI = 2**30


@dataclass(frozen=True)
class Node:
    """The scheduling-relevant part of a Kubernetes Node."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()
    allocatable: dict[str, str] = field(default_factory=dict)
    unschedulable: bool = False

    @classmethod
    def from_api(cls, obj: dict) -> Node:
        """A Node from the API's JSON object (an item of ``GET /api/v1/nodes``)."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        taints = tuple(
            {k: str(t[k]) for k in ("key", "value", "effect") if t.get(k) is not None} for t in spec.get("taints") or []
        )
        return cls(
            name=str(meta.get("name", "")),
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            taints=taints,
            allocatable={str(k): str(v) for k, v in (status.get("allocatable") or {}).items()},
            unschedulable=bool(spec.get("unschedulable", False)),
        )


@dataclass(frozen=True)
class Pod:
    """A pod holding resources on a node: its effective requests (cpu in millicores, the rest in base units)."""

    namespace: str
    name: str
    node: str
    labels: dict[str, str] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_api(cls, obj: dict) -> Pod:
        """A Pod from the API's JSON object (an item of ``GET /api/v1/pods``)."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            node=str(spec.get("nodeName", "")),
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            requests=pod_requests(spec),
        )


def amount(resource: str, value: str | int | float) -> int:
    """A resource quantity as the scheduler counts it, rounded up: cpu in millicores, the rest in base units."""
    exact = parse_quantity(value)
    return math.ceil(exact * 1000 if resource == "cpu" else exact)


def _container_requests(container: dict) -> dict[str, int]:
    resources = container.get("resources") or {}
    # The API server copies a limit into a missing request; GPUs usually set only the limit.
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: amount(name, value) for name, value in merged.items()}


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for name, value in more.items():
        total[name] = total.get(name, 0) + value


def _maximize(total: dict[str, int], other: dict[str, int]) -> None:
    for name, value in other.items():
        total[name] = max(total.get(name, 0), value)


def pod_requests(pod_spec: dict) -> dict[str, int]:
    """The pod's effective requests as the scheduler computes them (cpu in millicores, the rest in base units)."""
    total: dict[str, int] = {}
    for container in pod_spec.get("containers") or []:
        _add(total, _container_requests(container))
    # Init containers run one at a time, each beside the sidecars (restartPolicy Always) started before it;
    # sidecars keep running beside the app containers too.
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for container in pod_spec.get("initContainers") or []:
        requests = _container_requests(container)
        if container.get("restartPolicy") == "Always":
            _add(total, requests)
            _add(sidecars, requests)
            _maximize(init_peak, sidecars)
        else:
            running = dict(sidecars)
            _add(running, requests)
            _maximize(init_peak, running)
    _maximize(total, init_peak)
    _add(total, {name: amount(name, value) for name, value in (pod_spec.get("overhead") or {}).items()})
    return total


def _is_bytes(resource: str) -> bool:
    return resource in ("memory", "ephemeral-storage", "storage") or resource.startswith("hugepages-")


def _human(resource: str, value: int, original: str | None = None) -> str:
    """A quantity for messages: cpu as cores or m, bytes in Gi where exact, else as written."""
    if resource == "cpu":
        return str(value // 1000) if value % 1000 == 0 else f"{value}m"
    if _is_bytes(resource):
        if value and value % _GI == 0:
            return f"{value // _GI}Gi"
        text = original or (f"{value // 2**20}Mi" if value % 2**20 == 0 else str(value))
        return f"{text} ({value / _GI:.1f}Gi)" if value >= _GI else text
    return original if original is not None else str(value)


def _taint_text(taint: dict[str, str]) -> str:
    value = f"={taint['value']}" if taint.get("value") else ""
    return f"{taint.get('key', '')}{value}:{taint.get('effect', '')}"


def _expression_text(expr: dict) -> str:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), [str(v) for v in expr.get("values") or []]
    return {
        "In": f"{key} in ({', '.join(values)})",
        "NotIn": f"{key} notin ({', '.join(values)})",
        "Exists": key,
        "DoesNotExist": f"!{key}",
        "Gt": f"{key}>{''.join(values[:1])}",
        "Lt": f"{key}<{''.join(values[:1])}",
    }.get(op, f"{key} {op} {values}")


def _expression_matches(expr: dict, fields: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), [str(v) for v in expr.get("values") or []]
    present = key in fields
    if op == "In":
        return present and fields[key] in values
    if op == "NotIn":
        return not present or fields[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, bound = int(fields[key]), int(values[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def _term_failure(term: dict, node: Node) -> str | None:
    """The first expression of a node selector term the node fails, or None when the term matches."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return "an empty term"  # matches no node
    for expr in expressions:
        if not _expression_matches(expr, node.labels):
            return _expression_text(expr)
    for expr in fields:
        if expr.get("key") != "metadata.name" or not _expression_matches(expr, {"metadata.name": node.name}):
            return _expression_text(expr)
    return None


def _affinity_failure(pod_spec: dict, node: Node) -> str | None:
    node_affinity = (pod_spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return None
    terms = required.get("nodeSelectorTerms") or []
    failures = [_term_failure(term, node) for term in terms]
    if terms and None in failures:
        return None
    if len(failures) == 1:
        return f"required node affinity {failures[0]} not matched"
    return f"none of the {len(terms)} required node affinity terms matched ({'; '.join(map(str, failures))})"


def _node_failures(pod_spec: dict, requests: dict[str, int], node: Node, left: str = "allocatable") -> list[str]:
    """Why the pod cannot go on this node, in the scheduler's filter order; empty when it can. ``left`` names
    what ``node.allocatable`` holds in messages ("free" when it is what other pods leave)."""
    reasons: list[str] = []
    tolerations = [t for t in pod_spec.get("tolerations") or [] if t]
    cordon_taint = {"key": _UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
    if node.unschedulable and not any(tolerates(t, cordon_taint) for t in tolerations):
        reasons.append("cordoned (unschedulable)")
    selector = pod_spec.get("nodeSelector") or {}
    for key, want in sorted(selector.items()):
        if node.labels.get(key) != str(want):
            actual = f" (node has {key}={node.labels[key]})" if key in node.labels else ""
            reasons.append(f"node selector {key}={want} not matched{actual}")
    affinity = _affinity_failure(pod_spec, node)
    if affinity:
        reasons.append(affinity)
    for taint in node.taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if node.unschedulable and taint.get("key") == _UNSCHEDULABLE_TAINT:
            continue  # already said "cordoned", or tolerated above
        if not any(tolerates(t, taint) for t in tolerations):
            reasons.append(f"untolerated taint {_taint_text(taint)}")
    needs = dict(requests)
    if "pods" in node.allocatable:
        needs.setdefault("pods", 1)
    for resource, asked in sorted(needs.items()):
        if asked <= 0:
            continue
        original = node.allocatable.get(resource)
        try:
            have = amount(resource, original) if original is not None else 0
        except ValueError:
            continue  # a quantity we cannot read is no evidence that the pod does not fit
        if asked > have:
            shown = _human(resource, have, None if resource == "cpu" or original is None else original)
            reasons.append(f"{resource} {_human(resource, asked)} asked, {shown} {left}")
    return reasons


def why_unschedulable(pod_spec: dict, nodes: list[Node]) -> str | None:
    """None when some node could take the pod by its allocatable resources (ignoring the pods already there);
    otherwise why no node can, one clause per node in name order."""
    if not nodes:
        return "no node can run it: the cluster has no nodes"
    requests = pod_requests(pod_spec)
    clauses = []
    for node in sorted(nodes, key=lambda n: n.name):
        reasons = _node_failures(pod_spec, requests, node)
        if not reasons:
            return None
        clauses.append(f"{node.name}: {', '.join(reasons)}")
    return "no node can run it: " + "; ".join(clauses)


class Room:
    """What each node has left for this stack: allocatable minus the requests of the pods already there, minus
    what earlier services were given here.

    ``owner_of`` names the service of this stack a running pod belongs to (None: somebody else's). A service's
    own pods make way for it when it is placed (its update replaces them, Recreate with GPUs, or they are the
    very pods it keeps); until then they hold their room, so a new service never gets it. ``place`` judges
    services one by one, in the order given, first node (by name) with room first: a check, not the scheduler
    (which scores nodes), so a plan it accepts may still be packed differently.
    """

    def __init__(self, nodes: list[Node], pods: list[Pod], owner_of: Callable[[Pod], str | None]) -> None:
        self.nodes = sorted(nodes, key=lambda n: n.name)
        self.used: dict[str, dict[str, int]] = {n.name: {} for n in self.nodes}
        self.users: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        self.own: dict[str, list[Pod]] = {}
        for pod in pods:
            if pod.node in self.used:
                self._take(pod.node, pod.requests, f"{pod.namespace}/{pod.name}")
                owner = owner_of(pod)
                if owner is not None:
                    self.own.setdefault(owner, []).append(pod)

    def _take(self, node: str, requests: dict[str, int], user: str) -> None:
        _add(self.used[node], {**requests, "pods": 1})
        self.users[node].append(user)

    def _give_back(self, node: str, requests: dict[str, int], user: str) -> None:
        _add(self.used[node], {k: -v for k, v in {**requests, "pods": 1}.items()})
        self.users[node].remove(user)

    def _free(self, node: Node) -> Node:
        free = {}
        for resource, value in node.allocatable.items():
            try:
                have = amount(resource, value) - self.used[node.name].get(resource, 0)
            except ValueError:
                continue
            free[resource] = f"{max(have, 0)}m" if resource == "cpu" else str(max(have, 0))
        return Node(node.name, node.labels, node.taints, free, node.unschedulable)

    def place(
        self, pod_spec: dict, replicas: int, owner: str, label: str | None = None, exclude: Collection[str] = ()
    ) -> tuple[list[str], str | None]:
        """Give ``replicas`` pods of service ``owner`` room, after its own running pods made way: (the nodes
        they got, None), or ([], why not). ``label`` names its reservations in messages (default: ``owner``);
        ``exclude``: nodes the pod may not share (another member of its multi-node group runs there)."""
        label = label or owner
        for pod in self.own.pop(owner, []):
            self._give_back(pod.node, pod.requests, f"{pod.namespace}/{pod.name}")
        requests = pod_requests(pod_spec)
        taken: list[str] = []
        for _ in range(replicas):
            node = next(
                (
                    n
                    for n in self.nodes
                    if n.name not in exclude and not _node_failures(pod_spec, requests, self._free(n))
                ),
                None,
            )
            if node is None:
                why = self._why_not(pod_spec, requests, exclude)
                for name in taken:  # what does not all fit takes nothing
                    self._give_back(name, requests, label)
                return [], why
            self._take(node.name, requests, label)
            taken.append(node.name)
        return sorted(set(taken)), None

    def _why_not(self, pod_spec: dict, requests: dict[str, int], exclude: Collection[str] = ()) -> str:
        clauses = []
        for node in self.nodes:
            if node.name in exclude:
                clauses.append(f"{node.name}: runs another member of its group")
                continue
            reasons = _node_failures(pod_spec, requests, self._free(node), left="free")
            users = sorted(set(self.users[node.name]))
            clauses.append(f"{node.name}: {', '.join(reasons)}" + (f" (in use by {', '.join(users)})" if users else ""))
        return "no node has room left for it: " + "; ".join(clauses)
