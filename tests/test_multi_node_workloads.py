"""A multi-node service's workloads (multiNode, llama.cpp RPC): the workers' Deployments and headless Services,
what the group adds to llama-server's pod and arguments, the NetworkPolicies, and the preview's warning.

The builders are tested on resolved services (resolve only, no planner): the size is a number in these specs,
and a worker's host memory is the planner's, set here where a test needs it. A few tests run the whole pipeline
(and one the real program under Pulumi mocks) for the wiring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import kubernetes_validate
import pytest

from llmkube_components import workloads
from llmkube_components.api.service import DEFAULT_WORKER_COMMAND
from llmkube_components.api.stack import NetworkPolicySettings
from llmkube_components.errors import ConfigError
from llmkube_components.pipeline import platform
from llmkube_components.resolve import ResolvedService, resolve_stack, validate_stack
from llmkube_components.settings import Settings
from llmkube_components.workloads import multinode
from llmkube_components.workloads.network import multi_node_warnings, network_policy, worker_network_policy
from llmkube_components.workloads.overrides import memory_limit_for

K8S_VERSION = kubernetes_validate.latest_version()
OFFLINE = Settings(offline=True)
GiB = 2**30
HF = {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/q.gguf", "catalog": "Llama-3.2-1B"}
HEAD_SELECTOR = {"app": "chat", "inference.llmkube.dev/service": "chat"}
NVIDIA_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
HOSTNAME = "kubernetes.io/hostname"
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
# Where the pipeline plans a group: the planner's pool check wants a node of the service's profile per member.
CLUSTER = {"extends": "dual-rtx5060ti", "nodes": 4}
GROUP = "inference.llmkube.dev/group"
# A worker on each kind of node: the service's own profile (2 x RTX 5060 Ti), an RTX 4090 pinned to a node, a CPU.
THREE = {
    "size": 4,
    "members": [
        {"rank": 2, "nodeName": "gpu-b", "hardwareProfile": "rtx4090"},
        {"rank": 3, "hardwareProfile": "cpu-only"},
    ],
}


def raw_stack(
    multi: Mapping[str, Any] | None, hardware: str | dict[str, Any] = "dual-rtx5060ti", **fields: Any
) -> dict[str, Any]:
    """A stack with one service, chat; ``fields`` go into the service's spec, ``networkPolicy`` to the stack."""
    top = {key: fields.pop(key) for key in ("networkPolicy",) if key in fields}
    service: dict[str, Any] = {"modelRef": "m", **fields}
    if multi is not None:
        service["multiNode"] = dict(multi)
    return {"hardware": hardware, "models": {"m": HF}, "services": {"chat": service}, **top}


def resolved(multi: Mapping[str, Any] | None, hardware: str = "dual-rtx5060ti", **fields: Any) -> ResolvedService:
    """The service chat as resolve makes it (the builders' input), without the planner."""
    return resolve_stack(validate_stack(raw_stack(multi, hardware, **fields))).services["chat"]


def of(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def pod(deployment: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def head(service: ResolvedService) -> dict[str, Any]:
    return workloads.deployment(service)


def worker(service: ResolvedService, rank: int) -> dict[str, Any]:
    return of(workloads.service_workloads(service), "Deployment", f"chat-rpc-{rank}")


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# ---------------------------------------------------------------------------------------------------------
# The workers: one Deployment and one headless Service per rank, on the worker's hardware
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rank", "node_selector", "tolerations", "gpus"),
    [
        # Rank 1 takes the service's node: both of its GPUs.
        (1, {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5060-Ti"}, [NVIDIA_TOLERATION], {"nvidia.com/gpu": "2"}),
        # Rank 2's member names an RTX 4090 and pins it to the node gpu-b.
        (
            2,
            {HOSTNAME: "gpu-b", "nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090"},
            [NVIDIA_TOLERATION],
            {"nvidia.com/gpu": "1"},
        ),
        # Rank 3 is a CPU node: no GPU, no GPU node label or toleration.
        (3, None, None, {}),
    ],
)
def test_each_worker_runs_on_its_members_hardware(
    rank: int, node_selector: dict[str, str] | None, tolerations: list[dict[str, str]] | None, gpus: dict[str, str]
) -> None:
    spec = pod(worker(resolved(THREE), rank))
    assert spec.get("nodeSelector") == node_selector
    assert spec.get("tolerations") == tolerations
    (container,) = spec["containers"]
    resources = container["resources"]
    assert {k: v for k, v in resources["limits"].items() if k != "memory"} == gpus
    assert {k: v for k, v in resources["requests"].items() if k != "memory"} == gpus  # request = limit


def test_the_workers_come_in_rank_order_after_the_server_objects() -> None:
    names = [(m["kind"], m["metadata"]["name"]) for m in workloads.service_workloads(resolved(THREE))]
    assert names == [
        ("Deployment", "chat"),
        ("Service", "chat"),
        ("Service", "chat-rpc-1"),
        ("Deployment", "chat-rpc-1"),
        ("Service", "chat-rpc-2"),
        ("Deployment", "chat-rpc-2"),
        ("Service", "chat-rpc-3"),
        ("Deployment", "chat-rpc-3"),
    ]
    assert [workloads.worker_rank(m) for m in workloads.service_workloads(resolved(THREE))] == [
        None,
        None,
        1,
        1,
        2,
        2,
        3,
        3,
    ]


@pytest.mark.parametrize(
    ("planned", "asked"),
    [
        ((), "1Gi"),  # not planned yet: the default
        ((3 * GiB, 5 * GiB // 2, 40 * GiB), "2560Mi"),  # rank 2's share
    ],
)
def test_a_worker_asks_the_host_memory_the_planner_gave_it(planned: tuple[int, ...], asked: str) -> None:
    service = dataclasses.replace(resolved(THREE), worker_host_memory=planned)
    resources = pod(worker(service, 2))["containers"][0]["resources"]
    assert resources["requests"]["memory"] == asked
    assert resources["limits"]["memory"] == memory_limit_for(asked)  # the server's headroom rule


def test_a_cpu_worker_gets_memory_and_no_gpu() -> None:
    resources = pod(worker(resolved(THREE), 3))["containers"][0]["resources"]
    assert resources == {"limits": {"memory": "3Gi"}, "requests": {"memory": "1Gi"}}


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_a_worker_has_a_headless_service_that_selects_its_pod_only(rank: int) -> None:
    manifests = workloads.service_workloads(resolved(THREE))
    svc = of(manifests, "Service", f"chat-rpc-{rank}")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"] == [{"name": "rpc", "port": 50052, "targetPort": "rpc", "protocol": "TCP"}]
    pods = {
        m["metadata"]["name"]: m["spec"]["template"]["metadata"]["labels"] for m in manifests if "template" in m["spec"]
    }
    assert [name for name, labels in pods.items() if matches(svc["spec"]["selector"], labels)] == [f"chat-rpc-{rank}"]


def test_no_worker_pod_matches_the_servers_selector() -> None:
    # The server's Service (and its PodDisruptionBudget, HTTPRoute, NetworkPolicy) select on these: a worker pod
    # among them would receive the service's HTTP requests.
    manifests = workloads.service_workloads(resolved(THREE))
    server_service = of(manifests, "Service", "chat")
    assert server_service["spec"]["selector"] == HEAD_SELECTOR
    for rank in (1, 2, 3):
        deployment = of(manifests, "Deployment", f"chat-rpc-{rank}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert not matches(HEAD_SELECTOR, labels)
        assert "inference.llmkube.dev/service" not in labels
        assert labels["app.kubernetes.io/component"] == "rpc-worker"
        assert labels["app.kubernetes.io/instance"] == "chat"
        assert labels["inference.llmkube.dev/rank"] == str(rank)
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector == {"app": f"chat-rpc-{rank}", GROUP: "chat"}
        assert matches(selector, labels)
        assert not matches(selector, of(manifests, "Deployment", "chat")["spec"]["template"]["metadata"]["labels"])


def test_every_member_keeps_off_the_nodes_of_the_others() -> None:
    service = resolved(THREE)
    term = {"labelSelector": {"matchLabels": {GROUP: "chat"}}, "topologyKey": HOSTNAME}
    members = [head(service), *(worker(service, rank) for rank in (1, 2, 3))]
    for member in members:
        assert member["spec"]["template"]["metadata"]["labels"][GROUP] == "chat"
        assert pod(member)["affinity"]["podAntiAffinity"] == {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    assert head(service)["spec"]["template"]["metadata"]["labels"]["inference.llmkube.dev/rank"] == "0"


def test_the_groups_anti_affinity_joins_the_users_affinity() -> None:
    node = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["lab"]}]}]}}  # fmt: skip
    away = {"labelSelector": {"matchLabels": {"app": "batch"}}, "topologyKey": HOSTNAME}
    affinity = {
        "nodeAffinity": node,
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [away]},
    }
    got = pod(head(resolved(THREE, affinity=affinity)))["affinity"]
    # The user's term, with the node rank 2 is pinned to excluded (member_affinity).
    terms = got["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["lab"]},
                {"key": HOSTNAME, "operator": "NotIn", "values": ["gpu-b"]},
            ]
        }
    ]
    assert got["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
        away,
        {"labelSelector": {"matchLabels": {GROUP: "chat"}}, "topologyKey": HOSTNAME},
    ]
    # A worker takes none of llama-server's affinity: only the group's (the pinned rank 2's node kept free).
    worker_node = pod(worker(resolved(THREE, affinity=affinity), 1))["affinity"]["nodeAffinity"]
    assert worker_node[REQUIRED]["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": HOSTNAME, "operator": "NotIn", "values": ["gpu-b"]}]}
    ]


@pytest.mark.parametrize(
    ("multi", "expected"),
    [
        # Member 0 pinned: the server's node, beside the profile's GPU label.
        (
            {"size": 2, "members": [{"rank": 0, "nodeName": "gpu-a"}]},
            {HOSTNAME: "gpu-a", "nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5060-Ti"},
        ),
        ({"size": 2}, {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5060-Ti"}),
        # A group of one has no worker, but its node is still pinned.
        (
            {"size": 1, "members": [{"rank": 0, "nodeName": "gpu-a"}]},
            {HOSTNAME: "gpu-a", "nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5060-Ti"},
        ),
    ],
    ids=str,
)
def test_the_server_is_pinned_when_member_0_names_a_node(multi: dict[str, Any], expected: dict[str, str]) -> None:
    assert pod(head(resolved(multi)))["nodeSelector"] == expected


def test_a_worker_has_a_startup_probe_only() -> None:
    (container,) = pod(worker(resolved(THREE), 1))["containers"]
    assert container["startupProbe"]["tcpSocket"] == {"port": "rpc"}
    assert "readinessProbe" not in container and "livenessProbe" not in container


@pytest.mark.parametrize(
    ("multi", "args", "env", "volumes"),
    [
        (
            {"size": 2},
            ["--host", "0.0.0.0", "--port", "50052", "--cache"],
            [{"name": "LLAMA_CACHE", "value": "/rpc-cache"}],
            ["rpc-cache", "tmp"],
        ),
        (
            {"size": 2, "workerCache": True, "rendezvousPort": 6000},
            ["--host", "0.0.0.0", "--port", "6000", "--cache"],
            [{"name": "LLAMA_CACHE", "value": "/rpc-cache"}],
            ["rpc-cache", "tmp"],
        ),
        ({"size": 2, "workerCache": False}, ["--host", "0.0.0.0", "--port", "50052"], None, ["tmp"]),
    ],
    ids=str,
)
def test_the_worker_cache(multi: dict[str, Any], args: list[str], env: list[Any] | None, volumes: list[str]) -> None:
    spec = pod(worker(resolved(multi), 1))
    (container,) = spec["containers"]
    assert container["args"] == args
    assert container.get("env") == env
    assert [v["name"] for v in spec["volumes"]] == volumes
    assert all("emptyDir" in v for v in spec["volumes"])
    assert [m["name"] for m in container["volumeMounts"]] == volumes


@pytest.mark.parametrize(
    ("multi", "image", "command"),
    [
        ({"size": 2}, "ghcr.io/ggml-org/llama.cpp:server-cuda13", DEFAULT_WORKER_COMMAND),
        (
            {"size": 2, "workerImage": "example.com/llama.cpp:rpc", "workerCommand": ["/app/rpc-server"]},
            "example.com/llama.cpp:rpc",
            ["/app/rpc-server"],
        ),
    ],
    ids=str,
)
def test_the_worker_image_and_command(multi: dict[str, Any], image: str, command: list[str]) -> None:
    (container,) = pod(worker(resolved(multi), 1))["containers"]
    assert (container["image"], container["command"]) == (image, command)


def test_a_worker_pod_is_restricted_and_mounts_nothing_of_the_model() -> None:
    service = resolved(THREE)
    spec = pod(worker(service, 1))
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == pod(head(service))["securityContext"]
    assert spec["containers"][0]["securityContext"] == pod(head(service))["containers"][0]["securityContext"]
    assert workloads.pod_security_level(spec) == "restricted"
    assert "initContainers" not in spec
    assert all("persistentVolumeClaim" not in v for v in spec["volumes"])


@pytest.mark.parametrize(
    ("fields", "rank", "pod_fields"),
    [
        # The group's priority and eviction protection: losing a worker stops the whole service.
        ({"priority": "high"}, 3, {"priorityClassName": "llmkube-high"}),
        ({"imagePullSecrets": [{"name": "registry"}]}, 3, {"imagePullSecrets": [{"name": "registry"}]}),
        # The runtime class serves the GPUs: a GPU worker's pod takes it, a CPU worker's does not.
        ({"runtimeClassName": "nvidia"}, 2, {"runtimeClassName": "nvidia"}),
        ({"runtimeClassName": "nvidia"}, 3, {"runtimeClassName": None}),
    ],
    ids=str,
)
def test_what_a_worker_takes_from_the_service(fields: dict[str, Any], rank: int, pod_fields: dict[str, Any]) -> None:
    spec = pod(worker(resolved(THREE, **fields), rank))
    assert {key: spec.get(key) for key in pod_fields} == pod_fields


def test_a_protected_services_workers_are_protected_too() -> None:
    template = worker(resolved(THREE, evictionProtection=True), 1)["spec"]["template"]
    annotations = dict(template["metadata"]["annotations"])
    assert annotations.pop("inference.llmkube.dev/group-layout") == "0=*,1=*,2=gpu-b,3=*"
    assert annotations == dict(workloads.EVICTION_PROTECTION_ANNOTATIONS)


@pytest.mark.parametrize(
    ("fields", "replicas"),
    [({}, 1), ({"suspend": True}, 0)],
    ids=str,
)
def test_the_workers_are_one_pod_each_and_are_recreated(fields: dict[str, Any], replicas: int) -> None:
    deployment = worker(resolved(THREE, **fields), 1)
    assert deployment["spec"]["replicas"] == replicas
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize(
    ("multi", "strategy"),
    [
        # No GPU on the server's node: a single node rolls, a group is recreated (each worker has one client).
        (None, "RollingUpdate"),
        ({"size": 1}, "RollingUpdate"),
        ({"size": 2}, "Recreate"),
    ],
    ids=str,
)
def test_the_server_of_a_group_is_recreated(multi: dict[str, Any] | None, strategy: str) -> None:
    assert head(resolved(multi, hardware="cpu-only"))["spec"]["strategy"]["type"] == strategy


def test_every_manifest_of_a_group_validates_against_kubernetes() -> None:
    service = resolved(THREE)
    settings = NetworkPolicySettings()
    objects = [*workloads.service_workloads(service), network_policy(service, settings)]
    objects.append(worker_network_policy(service, settings))
    for manifest in objects:
        assert manifest is not None
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    (namespace,) = workloads.namespace_manifests("llmkube", objects)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_size_still_auto_is_refused_by_the_builders() -> None:
    with pytest.raises(ValueError, match=r"services\.chat\.multiNode\.size is still auto"):
        workloads.service_workloads(resolved({"size": "auto"}))


# ---------------------------------------------------------------------------------------------------------
# llama-server of a group: --rpc, the GPU flags over every device, the wait for the workers
# ---------------------------------------------------------------------------------------------------------


def args_of(service: ResolvedService) -> list[str]:
    return list(pod(head(service))["containers"][0]["args"])


def test_the_server_names_its_workers_in_rank_order_before_the_gpu_flags() -> None:
    args = args_of(resolved(THREE))
    rpc = args.index("--rpc")
    assert args[rpc + 1] == ",".join(f"chat-rpc-{r}.llmkube.svc:50052" for r in (1, 2, 3))
    assert rpc < args.index("--n-gpu-layers")
    assert workloads.server_args_for(resolved(THREE)) == args


def test_the_workers_port_is_the_rendezvous_port() -> None:
    service = resolved({"size": 3, "rendezvousPort": 6000})
    assert workloads.rpc_servers(service) == ("chat-rpc-1.llmkube.svc:6000", "chat-rpc-2.llmkube.svc:6000")


@pytest.mark.parametrize(
    ("multi", "hardware", "devices"),
    [
        # 2 workers' devices (an RTX 4090, a CPU) + the server's 2 GPUs, and rank 1 on the service's node: 2 more.
        (THREE, "dual-rtx5060ti", 6),
        ({"size": 2, "members": [{"rank": 1, "hardwareProfile": "rtx4090"}]}, "dual-rtx5060ti", 3),
        # A CPU server: the workers' devices only.
        ({"size": 3, "members": [{"rank": 1, "hardwareProfile": "rtx4090"}]}, "cpu-only", 2),
    ],
    ids=str,
)
def test_the_gpu_flags_count_the_workers_devices(multi: dict[str, Any], hardware: str, devices: int) -> None:
    service = resolved(multi, hardware)
    assert service.device_count == devices
    even = args_of(service)
    assert even[even.index("--tensor-split") + 1] == ",".join(["1"] * devices)
    assert even[even.index("--n-gpu-layers") + 1] == "99"
    # A tensorSplit of the spec (the planner's, or the user's): one share per device.
    shares = [float(i + 1) for i in range(devices)]
    spec = service.spec.model_copy(update={"tensor_split": shares})
    given = args_of(dataclasses.replace(service, spec=spec))
    assert given[given.index("--tensor-split") + 1].split(",") == [str(i + 1) for i in range(devices)]


def test_a_single_node_service_has_no_rpc_and_counts_its_gpus() -> None:
    args = args_of(resolved(None))
    assert "--rpc" not in args
    assert args[args.index("--tensor-split") + 1] == "1,1"


def test_the_server_waits_for_every_worker_last() -> None:
    service = resolved(THREE)
    init = pod(head(service))["initContainers"]
    wait = init[-1]
    assert [c["name"] for c in init][-1] == "wait-for-rpc-workers"
    assert wait["image"] == workloads.DOWNLOADER_IMAGE
    assert wait["command"][:2] == ["sh", "-c"]
    lines = [line for line in wait["command"][2].splitlines() if line.startswith("wait_for ")]
    assert lines == [f"wait_for chat-rpc-{r}.llmkube.svc:50052" for r in (1, 2, 3)]
    assert wait["securityContext"]["readOnlyRootFilesystem"] is True
    assert wait["resources"]["limits"] and wait["resources"]["requests"]
    assert workloads.pod_security_level(pod(head(service))) == "restricted"
    assert all(c["name"] != "wait-for-rpc-workers" for c in pod(head(resolved(None))).get("initContainers", []))


# Connections held half a second (the pod's: WAIT_CONNECT_SECONDS), retried every fifth of one.
FAST: dict[str, Any] = {"connect_seconds": 0.5, "retry_seconds": 0.2}
needs_tools = pytest.mark.skipif(not all(shutil.which(tool) for tool in ("sh", "curl")), reason="needs sh and curl")


@contextlib.contextmanager
def listener(port: int = 0) -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server that serves one client at a time, as ggml-rpc-server: what each connection sent, in order."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(1)
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            with client:
                client.settimeout(10)
                chunks = []
                with contextlib.suppress(OSError):
                    while chunk := client.recv(64):
                        chunks.append(chunk)
                received.append(b"".join(chunks))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], received
    finally:
        stop.set()
        thread.join()
        server.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@needs_tools
def test_the_wait_script_connects_sends_nothing_and_returns() -> None:
    with listener() as (port, received), listener() as (other, also):
        script = multinode.wait_script([f"127.0.0.1:{port}", f"127.0.0.1:{other}"], **FAST)
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"llmkube: ggml-rpc-server at 127.0.0.1:{port} accepts connections",
        f"llmkube: ggml-rpc-server at 127.0.0.1:{other} accepts connections",
    ]
    # One connection each, closed without a byte: a worker drops it quietly and waits for its llama-server.
    assert received == [b""] and also == [b""]


@needs_tools
def test_the_wait_script_waits_until_a_worker_listens() -> None:
    port = free_port()
    script = multinode.wait_script([f"127.0.0.1:{port}"], **FAST)
    with subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True) as waiting:
        time.sleep(1)
        assert waiting.poll() is None  # nobody listens yet
        with listener(port):
            out, _ = waiting.communicate(timeout=30)
    assert waiting.returncode == 0
    assert out.splitlines() == [
        f"llmkube: waiting for ggml-rpc-server at 127.0.0.1:{port} (curl exit 7)",
        f"llmkube: ggml-rpc-server at 127.0.0.1:{port} accepts connections",
    ]


# ---------------------------------------------------------------------------------------------------------
# NetworkPolicies and the warning without them
# ---------------------------------------------------------------------------------------------------------

WORKERS = {"app.kubernetes.io/component": "rpc-worker", GROUP: "chat"}
DNS = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


@pytest.mark.parametrize("port", [None, 6000])
def test_the_workers_admit_the_server_only_and_connect_nowhere(port: int | None) -> None:
    multi = {**THREE, **({"rendezvousPort": port} if port else {})}
    got = worker_network_policy(resolved(multi), NetworkPolicySettings())
    assert got is not None
    assert got["metadata"]["name"] == "chat-rpc-workers"
    assert got["spec"] == {
        "podSelector": {"matchLabels": WORKERS},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": HEAD_SELECTOR}}],
                "ports": [{"protocol": "TCP", "port": port or 50052}],
            }
        ],
        "egress": [],
    }
    # It selects every worker pod and no server pod.
    manifests = workloads.service_workloads(resolved(multi))
    selected = [
        m["metadata"]["name"]
        for m in manifests
        if m["kind"] == "Deployment" and matches(WORKERS, m["spec"]["template"]["metadata"]["labels"])
    ]
    assert selected == ["chat-rpc-1", "chat-rpc-2", "chat-rpc-3"]


@pytest.mark.parametrize(
    ("model", "egress"),
    [
        # Downloads: DNS, the download's port, then the workers.
        (HF, [DNS, {"ports": [{"protocol": "TCP", "port": 443}]}]),
        # Nothing to download: DNS (to find the workers) and the workers.
        ({"source": "pvc://models/q.gguf", "catalog": "Llama-3.2-1B"}, [DNS]),
    ],
    ids=["download", "pvc"],
)
def test_the_server_may_reach_its_workers_and_dns(model: dict[str, Any], egress: list[Any]) -> None:
    raw = raw_stack(THREE)
    raw["models"]["m"] = model
    service = resolve_stack(validate_stack(raw)).services["chat"]
    got = network_policy(service, NetworkPolicySettings())
    assert got is not None
    to_workers = {"to": [{"podSelector": {"matchLabels": WORKERS}}], "ports": [{"protocol": "TCP", "port": 50052}]}
    assert got["spec"]["egress"] == [*egress, to_workers]
    assert got["spec"]["podSelector"] == {"matchLabels": HEAD_SELECTOR}


@pytest.mark.parametrize(
    ("multi", "enabled", "policies", "warned"),
    [
        (THREE, True, 2, False),
        (THREE, False, 0, True),
        (None, True, 1, False),
        (None, False, 0, False),
        ({"size": 1}, False, 0, False),  # a group of one has no worker to expose
    ],
    ids=str,
)
def test_policies_and_the_warning_follow_the_stack_setting(
    multi: dict[str, Any] | None, enabled: bool, policies: int, warned: bool
) -> None:
    service = resolved(multi)
    settings = NetworkPolicySettings(enabled=enabled)
    built = [p for p in (network_policy(service, settings), worker_network_policy(service, settings)) if p]
    assert len(built) == policies
    warnings = multi_node_warnings(service, settings)
    assert [w.path for w in warnings] == (["services.chat.multiNode"] if warned else [])
    if warned:
        assert "ggml-rpc-server has no authentication" in warnings[0].message
        assert "any pod" in warnings[0].message and "50052" in warnings[0].message


# ---------------------------------------------------------------------------------------------------------
# Through the pipeline (planned) and the real program under Pulumi mocks
# ---------------------------------------------------------------------------------------------------------


def test_the_pipeline_builds_the_group_its_policies_and_the_warning() -> None:
    on = platform(raw_stack(THREE, CLUSTER), OFFLINE).services["chat"]
    assert on.worker_network_policy is not None and on.network_policy is not None
    assert [m["metadata"]["name"] for m in on.workloads if m["kind"] == "Deployment"] == [
        "chat",
        "chat-rpc-1",
        "chat-rpc-2",
        "chat-rpc-3",
    ]
    assert on.server_args is not None and "--rpc" in on.server_args
    assert not [w for w in on.warnings if w.path.endswith("multiNode")]
    off = platform(raw_stack(THREE, CLUSTER, networkPolicy={"enabled": False}), OFFLINE).services["chat"]
    assert off.network_policy is None and off.worker_network_policy is None
    (warning,) = [w for w in off.warnings if w.path == "services.chat.multiNode"]
    assert str(warning).startswith("llmkube:services.chat.multiNode: its workers' ggml-rpc-server has no")


def test_a_pinned_node_name_that_is_no_label_value_is_a_config_error() -> None:
    # nodeSelector matches label values (at most 63 characters); node names may be longer.
    multi = {"size": 2, "members": [{"rank": 1, "nodeName": "n" * 70}]}
    with pytest.raises(ConfigError) as info:
        platform(raw_stack(multi, CLUSTER), OFFLINE)
    assert "llmkube:services.chat.multiNode.members[0].nodeName: kubernetes.io/hostname=" in str(info.value)


def test_the_program_registers_each_worker_under_its_rank() -> None:
    from tests.pulumi_program import RecordingMocks
    from tests.test_components import manifests, run

    config = {
        "llmkube:hardware": CLUSTER,
        "llmkube:models": {"m": HF},
        "llmkube:services": {"chat": {"modelRef": "m", "multiNode": {"size": 3}}},
    }

    def check(platform: Any, mocks: RecordingMocks) -> None:
        names = {(r.kind, r.name) for r in mocks.resources if r.type.startswith("kubernetes:")}
        assert {
            ("Deployment", "llmkube-chat-deployment"),
            ("Service", "llmkube-chat-service"),
            ("NetworkPolicy", "llmkube-chat-network-policy"),
            ("NetworkPolicy", "llmkube-chat-rpc-network-policy"),
            ("Deployment", "llmkube-chat-rpc-1-deployment"),
            ("Service", "llmkube-chat-rpc-1-service"),
            ("Deployment", "llmkube-chat-rpc-2-deployment"),
            ("Service", "llmkube-chat-rpc-2-service"),
        } <= names
        for obj in manifests(mocks):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)

    run(config, check)


def test_unpinned_members_keep_off_the_nodes_pinned_to_others_and_a_pin_replaces_every_member() -> None:
    # Rank 2 is pinned to gpu-b: the others may not take it when the pods are placed anew (the scheduler would
    # not move them off it for rank 2), and the pinned member has no such rule.
    service = resolved(THREE)
    away = [{"key": HOSTNAME, "operator": "NotIn", "values": ["gpu-b"]}]
    for spec in (pod(head(service)), pod(worker(service, 1)), pod(worker(service, 3))):
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms == [{"matchExpressions": away}]
    assert "nodeAffinity" not in pod(worker(service, 2))["affinity"]
    # Every member's template names the layout: moving a pin changes them all, so all are replaced together.
    layouts = {
        d["spec"]["template"]["metadata"]["annotations"]["inference.llmkube.dev/group-layout"]
        for d in (head(service), *(worker(service, r) for r in (1, 2, 3)))
    }
    assert layouts == {"0=*,1=*,2=gpu-b,3=*"}
    moved = resolved({**THREE, "members": [{"rank": 1, "nodeName": "gpu-b"}]})
    assert head(moved)["spec"]["template"]["metadata"]["annotations"]["inference.llmkube.dev/group-layout"] == (
        "0=*,1=gpu-b,2=*,3=*"
    )
