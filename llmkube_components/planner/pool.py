"""Fitting a pool: the replicas of every service on a hardware profile, placed together onto its nodes.

Each service is planned alone against its profile, which is one node. Several services on one profile, and
replicas above one, need room side by side: two services that each fit a 2-GPU node alone but together need 3
GPUs, or three replicas of a 2-GPU service on one node, would pass the per-service plans and then stay Pending.
So, after every service is planned, the replicas of each pool are placed onto its ``nodes`` the way the
scheduler must place them:

- a pool is the nodes of one profile name: services on the stack's llmkube:hardware and services whose
  hardwareProfile names the same profile share them; ``nodes`` is set once for the pool (default 1);
- a replica takes its whole GPUs, each held alone, and its RAM on one node. Its RAM is its memory request (what
  the scheduler reserves: for ``offload: auto`` the plan's host memory request) and at least the plan's host
  total (what it uses, asked for or not);
- a GPU share (resources.gpuSharing) goes onto a GPU held by shares of its kind only: a time-sliced share takes
  its planned GPU bytes and its own GPU reserve (every server has a CUDA context), a MIG slice its partition's
  memory; they pack onto one GPU up to its memory;
- the replicas always running count: replicas (0 when suspended), autoscaling.minReplicas. What does not fit
  them is an error. The autoscaler's maxReplicas beyond what fits is a warning: the stack serves, and the
  autoscaler's further replicas stay Pending, which a reviewer should see but which breaks nothing running.

Placement is first-fit decreasing (GPUs, then GPU bytes, then RAM; ties by service key), so the same stack always
gives the same verdict and message. It may miss a packing an exhaustive search would find (an error then asks for
a node more than strictly needed), never the reverse. A pass says a placement exists, not that the scheduler will
find it: it places pods as they come and spreads them, so an unlucky order can still strand a pod, which the
preview's node check (cluster/scheduling.py) reports against the real cluster. Not counted: CPU requests (the
profile counts physical cores, Kubernetes logical CPUs) and a rolling update's surge pod (GPU servers use
Recreate).

Services with an error of their own leave their pool unjudged: their plans are not what will run. A replica
larger than a node is the per-service plan's to judge; here it counts as filling a node.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..api import parse_quantity
from ..api.base import format_bytes
from ..api.service import DEFAULT_MIN_REPLICAS, DEFAULT_REPLICAS, InferenceResources
from ..errors import Problem, config_path
from ..hardware import HardwareProfile
from ..resolve import ResolvedService, ResolvedStack
from .plan import ServicePlan

ShareKind = Literal["shared", "partitioned"]

# A MIG-capable GPU (A100, H100, H200, B200) has seven compute slices; a MIG profile names how many it takes
# (3g.40gb: three). The A30's four are not told apart: a pool of them is judged by memory and seven slices.
MIG_COMPUTE_SLICES = 7
_MIG_COMPUTE = re.compile(r"^([0-9]+)g\.")


@dataclass(frozen=True)
class Share:
    """A replica's part of a GPU others use too."""

    size: int  # bytes of the GPU's memory
    slices: int = 0  # MIG compute slices; 0 for a time-sliced share


@dataclass(frozen=True)
class Replica:
    """What one replica of a service takes on its node."""

    service: str  # config key
    gpus: int  # whole GPUs, each held alone
    shares: tuple[Share, ...]  # parts of GPUs held with other shares of its kind, one per GPU share
    share_kind: ShareKind | None  # shares pack only with shares of the same kind (time-sliced or MIG)
    host: int  # bytes of RAM
    # multiNode: the group's members never share a node (required pod anti-affinity): the service's key
    group: str | None = None


@dataclass(frozen=True)
class Demand:
    """A service of a pool: one replica's needs, how many always run and how many the autoscaler may add."""

    service: ResolvedService
    replica: Replica
    running: int  # replicas, or autoscaling.minReplicas; 0 when suspended
    most: int  # autoscaling.maxReplicas, else ``running``
    role: str = ""  # a multi-node member: which one, e.g. " rank 1 (ggml-rpc-server)"

    def replicas(self, count: int) -> list[Replica]:
        return [self.replica] * count


@dataclass(frozen=True)
class Pool:
    """The nodes of one profile name and the services placed on them."""

    name: str
    node: HardwareProfile  # one node's hardware
    nodes: int
    path: str  # where the pool's nodes are set, or are to be set
    selection: str | Mapping[str, Any]  # the profile as written at ``path``
    demands: tuple[Demand, ...]


# --- placement ----------------------------------------------------------------------------------------------------


@dataclass
class _Gpu:
    holder: Literal["whole", "shared", "partitioned"] | None = None  # None: free
    used: int = 0  # bytes of the shares on it
    slices: int = 0  # MIG compute slices of the shares on it


@dataclass
class _Node:
    gpus: list[_Gpu]
    host: int  # bytes of RAM left
    groups: set[str] = dataclasses.field(default_factory=set)  # multi-node groups with a member here


def _place(replica: Replica, node: _Node, gpu_memory: int) -> bool:
    """Put the replica on the node when it fits there (True), else leave the node as it was."""
    if replica.host > node.host or (replica.group is not None and replica.group in node.groups):
        return False
    gpus = [dataclasses.replace(gpu) for gpu in node.gpus]
    free = [gpu for gpu in gpus if gpu.holder is None]
    if len(free) < replica.gpus:
        return False
    for gpu in free[: replica.gpus]:
        gpu.holder = "whole"
    for share in sorted(replica.shares, key=lambda s: (-s.size, -s.slices)):
        # A GPU its kind's shares hold already, first; a free one only when none has room.
        held = (g for g in gpus if g.holder == replica.share_kind and _room(g, share, gpu_memory))
        free_gpu = (g for g in gpus if g.holder is None and _room(g, share, gpu_memory))
        target = next(held, None) or next(free_gpu, None)
        if target is None:
            return False
        target.holder = replica.share_kind
        target.used += share.size
        target.slices += share.slices
    node.gpus = gpus
    node.host -= replica.host
    if replica.group is not None:
        node.groups.add(replica.group)
    return True


def _room(gpu: _Gpu, share: Share, gpu_memory: int) -> bool:
    return gpu.used + share.size <= gpu_memory and gpu.slices + share.slices <= MIG_COMPUTE_SLICES


def _order(replica: Replica) -> tuple[int, int, int, str]:
    return (-replica.gpus, -sum(s.size for s in replica.shares), -replica.host, replica.service)


def packs(replicas: Iterable[Replica], nodes: int, node: HardwareProfile) -> bool:
    """Whether the replicas fit onto ``nodes`` nodes of this hardware (first-fit decreasing)."""
    bins = [_Node([_Gpu() for _ in range(node.gpu_count)], node.usable_host_memory) for _ in range(nodes)]
    gpu_memory = _gpu_memory(node)
    return all(any(_place(replica, b, gpu_memory) for b in bins) for replica in sorted(replicas, key=_order))


def nodes_needed(replicas: Sequence[Replica], node: HardwareProfile, start: int = 1) -> int | None:
    """The fewest nodes, from ``start``, the replicas are placed onto; None if one replica is larger than a node."""
    for count in range(start, max(start, len(replicas)) + 1):
        if packs(replicas, count, node):
            return count
    return None


def _gpu_memory(node: HardwareProfile) -> int:
    return int(parse_quantity(node.gpu.memory)) if node.gpu else 0


# --- a service's replicas -----------------------------------------------------------------------------------------


def replica_of(service: ResolvedService, plan: ServicePlan | None) -> Replica:
    """What one replica of the service takes on its node, from its plan (None: the service could not be planned)
    and its requests."""
    node = service.node
    resources = service.spec.resources or InferenceResources()
    request = resources.host_memory or resources.memory
    host = max(plan.chosen.memory.host.total if plan else 0, int(parse_quantity(request)) if request else 0)
    host = min(host, node.usable_host_memory)
    gpus = service.gpu_count if node.gpu else 0
    sharing = resources.gpu_sharing
    kind = sharing.mode if sharing is not None else None
    if not gpus or kind not in ("shared", "partitioned"):
        return Replica(service.key, gpus, (), None, host)
    whole = _gpu_memory(node)
    share = _gpu_memory(service.profile)  # the share's memory, as gpu_share_profile made it (else the whole GPU)
    planned = [device.total for device in plan.chosen.memory.gpus] if plan else []
    reserve = int(parse_quantity(node.reserved.gpu_memory))
    compute = _MIG_COMPUTE.match(sharing.profile or "") if sharing is not None and kind == "partitioned" else None
    slices = int(compute.group(1)) if compute else 0
    shares: list[Share] = []
    for index in range(gpus):
        # A MIG slice is carved whole; a share without a plan counts all it may use.
        unplanned = kind == "partitioned" or index >= len(planned)
        shares.append(Share(min(share if unplanned else planned[index] + reserve, whole), slices))
    return Replica(service.key, 0, tuple(shares), kind, host)


def replica_counts(service: ResolvedService) -> tuple[int, int]:
    """Replicas always running, and the most there can be (the autoscaler's maxReplicas)."""
    spec = service.spec
    if spec.suspend:
        return 0, 0
    if spec.autoscaling is not None:
        low = spec.autoscaling.min_replicas
        return (DEFAULT_MIN_REPLICAS if low is None else low), spec.autoscaling.max_replicas
    count = DEFAULT_REPLICAS if spec.replicas is None else spec.replicas
    return count, count


# --- pools ----------------------------------------------------------------------------------------------------------


def _figures(profile: HardwareProfile) -> tuple[int, int, int, int]:
    return profile.gpu_count, _gpu_memory(profile), profile.usable_gpu_memory, profile.usable_host_memory


def pools(stack: ResolvedStack, plans: Mapping[str, ServicePlan]) -> tuple[list[Pool], list[Problem]]:
    """The stack's pools, each with its services' demands, and the problems of profiles one name gives
    different nodes or node counts."""
    declared: list[tuple[str, HardwareProfile, str | Mapping[str, Any]]] = [
        ("hardware", stack.profile, stack.config.hardware)
    ]
    for service in stack.services.values():
        if service.spec.hardware_profile is not None:
            declared.append((config_path(service.path, "hardwareProfile"), service.node, service.spec.hardware_profile))
        for rank, worker in _member_profiles(service):
            declared.append((_member_path(service, rank), worker, _member_selection(service, rank)))
    problems: list[Problem] = []
    conflicting: set[str] = set()  # names given two kinds of node or two counts: judged once that is fixed
    firsts: dict[str, tuple[str, HardwareProfile, str | Mapping[str, Any]]] = {}
    counted: dict[str, tuple[str, HardwareProfile, str | Mapping[str, Any]]] = {}
    for path, profile, selection in declared:
        first = firsts.setdefault(profile.name, (path, profile, selection))
        if _figures(profile) != _figures(first[1]):
            problems.append(
                Problem(
                    path,
                    f"names the profile {profile.name} as {_shown(first[0])} does, but with other nodes "
                    f"({_node_text(profile)}, not {_node_text(first[1])}); services on profiles of one name "
                    "share their nodes: give this profile a name of its own (name: ...)",
                )
            )
            conflicting.add(profile.name)
            continue
        if "nodes" not in profile.model_fields_set:
            continue
        known = counted.setdefault(profile.name, (path, profile, selection))
        if known[1].nodes != profile.nodes:
            problems.append(
                Problem(
                    config_path(path, "nodes"),
                    f"{profile.nodes}, but {_shown(known[0])} gives the profile {profile.name} "
                    f"{_count(known[1].nodes, 'node')}; the nodes of a profile are counted once for all its "
                    "services: set the number in one place",
                )
            )
            conflicting.add(profile.name)
    by_name: dict[str, list[Demand]] = {}
    for service in stack.services.values():
        running, most = replica_counts(service)
        replica = replica_of(service, plans.get(service.name))
        group = service.key if service.worker_profiles else None
        role = " rank 0 (llama-server)" if group else ""
        demand = Demand(service, dataclasses.replace(replica, group=group), running, most, role)
        by_name.setdefault(service.node.name, []).append(demand)
        memory = service.worker_host_memory
        for rank, worker in enumerate(service.worker_profiles, start=1):
            host = min(memory[rank - 1] if rank <= len(memory) else 0, worker.usable_host_memory)
            member = Replica(f"{service.key} rank {rank}", worker.gpu_count, (), None, host, group)
            by_name.setdefault(worker.name, []).append(
                Demand(service, member, running, running, f" rank {rank} (ggml-rpc-server)")
            )
    out: list[Pool] = []
    for name, demands in by_name.items():
        if name in conflicting:
            continue
        path, node, selection = counted.get(name) or firsts[name]
        ordered = tuple(sorted(demands, key=lambda d: d.service.key))
        out.append(Pool(name, firsts[name][1], node.nodes, path, selection, ordered))
    return out, problems


def pool_problems(
    stack: ResolvedStack, plans: Mapping[str, ServicePlan], failed: Collection[str] = ()
) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) of placing every pool's replicas onto its nodes. ``failed``: Kubernetes names of
    services with errors of their own, whose pools are left unjudged until those are fixed."""
    found, errors = pools(stack, plans)
    warnings: list[Problem] = []
    for pool in found:
        if any(d.service.name in failed for d in pool.demands):
            continue
        error, more = _judge(pool)
        errors += error
        warnings += more
    return errors, warnings


def _judge(pool: Pool) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) of one pool: its running replicas must fit; its autoscalers' most should."""
    running = [r for d in pool.demands for r in d.replicas(d.running)]
    if not packs(running, pool.nodes, pool.node):
        what = ", ".join(_demand_text(d) for d in pool.demands if d.running)
        return [
            Problem(
                pool.path,
                f"{_pool_text(pool)} cannot hold its services' replicas together: {what}; "
                + _remedy(pool, nodes_needed(running, pool.node, pool.nodes + 1)),
            )
        ], []
    scaled = [d for d in pool.demands if d.most > d.running]
    at_most = [*running, *(r for d in scaled for r in d.replicas(d.most - d.running))]
    if packs(at_most, pool.nodes, pool.node):
        return [], []
    warnings: list[Problem] = []
    for demand in scaled:
        reach = demand.running
        while reach < demand.most and packs(
            [*running, *demand.replicas(reach + 1 - demand.running)], pool.nodes, pool.node
        ):
            reach += 1
        if reach == demand.most:
            continue
        need = nodes_needed([*running, *demand.replicas(demand.most - demand.running)], pool.node, pool.nodes + 1)
        others = any(d.running for d in pool.demands if d is not demand)
        warnings.append(
            Problem(
                config_path(demand.service.path, "autoscaling", "maxReplicas"),
                f"{demand.most}, but at most {reach} replicas of {demand.service.key} "
                f"({_replica_text(demand.replica)} each) fit on {_pool_text(pool)}"
                + (" beside the other services' running replicas" if others else "")
                + f"; the autoscaler's further replicas would stay Pending: lower maxReplicas to {reach}, or "
                + _more_nodes(pool, need),
            )
        )
    if not warnings:  # each reaches its most alone, not all at once
        names = ", ".join(f"{d.service.key} (maxReplicas {d.most})" for d in scaled)
        warnings.append(
            Problem(
                pool.path,
                f"the autoscaled services {names} each fit at their most on {_pool_text(pool)}, but not all at "
                "once: whichever scales up first leaves the others' further replicas Pending; lower maxReplicas, or "
                + _more_nodes(pool, nodes_needed(at_most, pool.node, pool.nodes + 1)),
            )
        )
    return [], warnings


# --- messages --------------------------------------------------------------------------------------------------------


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shown(path: str) -> str:
    return f"llmkube:{path}"


def _node_text(node: HardwareProfile) -> str:
    ram = f"{format_bytes(node.usable_host_memory)} RAM"
    if node.gpu is None:
        return f"{ram} usable"
    return f"{node.gpu.count} x {format_bytes(node.usable_gpu_memory)} GPU and {ram} usable"


def _pool_text(pool: Pool) -> str:
    return f"{pool.name} ({_count(pool.nodes, 'node')} of {_node_text(pool.node)})"


def _replica_text(replica: Replica) -> str:
    parts: list[str] = [_count(replica.gpus, "GPU")] if replica.gpus else []
    shares = replica.shares
    if shares and shares[0].slices:
        each = f"{format_bytes(shares[0].size)}, {shares[0].slices}/{MIG_COMPUTE_SLICES} compute"
        parts.append(f"{_count(len(shares), 'MIG slice')} ({each})")
    elif shares:
        sizes = " + ".join(format_bytes(share.size) for share in shares)
        parts.append(f"{sizes} of {'a shared GPU' if len(shares) == 1 else f'{len(shares)} shared GPUs'}")
    parts.append(f"{format_bytes(replica.host)} RAM")
    return ", ".join(parts)


def _demand_text(demand: Demand) -> str:
    why = " (autoscaling.minReplicas)" if demand.service.spec.autoscaling is not None else ""
    return (
        f"{demand.service.key}{demand.role} {_count(demand.running, 'replica')}{why} x "
        f"({_replica_text(demand.replica)})"
    )


def _member_profiles(service: ResolvedService) -> list[tuple[int, HardwareProfile]]:
    """The workers of a multi-node service whose hardware a member names (hardwareProfile), by rank."""
    multi = service.spec.multi_node
    if multi is None:
        return []
    return [
        (rank, worker)
        for rank, worker in enumerate(service.worker_profiles, start=1)
        if (member := multi.member(rank)) is not None and member.hardware_profile is not None
    ]


def _member_index(service: ResolvedService, rank: int) -> int:
    members = service.spec.multi_node.members if service.spec.multi_node is not None else None
    return next(i for i, m in enumerate(members or ()) if m.rank == rank)


def _member_path(service: ResolvedService, rank: int) -> str:
    return config_path(service.path, "multiNode", "members", _member_index(service, rank), "hardwareProfile")


def _member_selection(service: ResolvedService, rank: int) -> str | Mapping[str, Any]:
    member = service.spec.multi_node.member(rank) if service.spec.multi_node is not None else None
    assert member is not None and member.hardware_profile is not None
    return member.hardware_profile


def _nodes_setting(pool: Pool, count: int) -> str:
    if isinstance(pool.selection, str):
        return f"{_shown(pool.path)}: {{extends: {pool.selection}, nodes: {count}}}"
    return f"{_shown(pool.path)}.nodes: {count}"


def _more_nodes(pool: Pool, need: int | None) -> str:
    if need is None:
        return "give the pool more nodes"
    return f"give the pool {need} nodes ({_nodes_setting(pool, need)}) if the cluster has them"


def _remedy(pool: Pool, need: int | None) -> str:
    has = f"the stack has {_count(pool.nodes, 'node')}"
    if need is None:
        return f"{has}, and one replica needs more than a node has: run fewer replicas or GPUs per replica"
    return (
        f"they need {_count(need, 'node')} of {pool.name}, {has}: set {_nodes_setting(pool, need)} if the "
        "cluster has them, or run fewer replicas or GPUs per replica"
    )
