"""Reading the cluster's nodes and telling why a pod fits none of them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from llmkube_components import cluster
from llmkube_components.cluster import (
    ClusterReader,
    ClusterUnavailable,
    Node,
    amount,
    kubeconfig_target,
    pod_requests,
    why_unschedulable,
)

GI = 2**30


def read_nodes(kubeconfig: str | None, context: str | None, timeout: float = 5.0) -> list[Node]:
    return ClusterReader(kubeconfig, context, timeout).nodes()


GPU = "nvidia.com/gpu"
PRODUCT = "nvidia.com/gpu.product"


# ---------------------------------------------------------------------------------------------------------
# Quantities and requests
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "milli", "expected"),
    [
        ("8", False, 8),
        (8, False, 8),
        ("8", True, 8000),
        ("500m", True, 500),
        ("0.5", True, 500),
        (0.25, True, 250),
        ("1.5", False, 2),  # rounded up
        ("100m", False, 1),  # rounded up
        ("1k", False, 1000),
        ("2M", False, 2 * 10**6),
        ("3G", False, 3 * 10**9),
        ("1T", False, 10**12),
        ("1P", False, 10**15),
        ("1E", False, 10**18),
        ("1Ki", False, 1024),
        ("512Mi", False, 512 * 2**20),
        ("48Gi", False, 48 * GI),
        ("1Ti", False, 2**40),
        ("1Pi", False, 2**50),
        ("1Ei", False, 2**60),
        ("1e3", False, 1000),
        ("1.5e3", True, 1_500_000),
        ("65776036Ki", False, 65776036 * 1024),
    ],
)
def test_amount_rounds_up_in_the_schedulers_units(value, milli, expected):
    assert amount("cpu" if milli else "memory", value) == expected


@pytest.mark.parametrize("bad", ["abc", "1.2.3", "-1", "1Gb", "", "1iE", "Ei", "1EE"])
def test_amount_rejects_what_is_no_quantity(bad):
    with pytest.raises(ValueError):
        amount("memory", bad)


def container(requests: dict | None = None, limits: dict | None = None, **extra) -> dict:
    resources = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"name": "c", "image": "x", "resources": resources, **extra}


def test_pod_requests_sums_containers_in_base_units():
    spec = {"containers": [container({"cpu": "500m", "memory": "1Gi"}), container({"cpu": "2", "memory": "512Mi"})]}
    assert pod_requests(spec) == {"cpu": 2500, "memory": GI + 512 * 2**20}


def test_pod_requests_limit_counts_as_request_when_no_request():
    spec = {"containers": [container({"cpu": "1"}, {"cpu": "4", GPU: "2", "memory": "8Gi"})]}
    assert pod_requests(spec) == {"cpu": 1000, GPU: 2, "memory": 8 * GI}


def test_pod_requests_init_containers_take_the_max_not_the_sum():
    spec = {
        "initContainers": [container({"cpu": "3", "memory": "1Gi"}), container({"cpu": "1", "memory": "4Gi"})],
        "containers": [container({"cpu": "2", "memory": "2Gi"})],
    }
    assert pod_requests(spec) == {"cpu": 3000, "memory": 4 * GI}


def test_pod_requests_sidecars_add_to_the_containers_and_to_later_init_containers():
    spec = {
        "initContainers": [
            container({"cpu": "1"}, restartPolicy="Always"),
            container({"cpu": "4"}),  # runs beside the sidecar: 5 cores at its peak
        ],
        "containers": [container({"cpu": "2"})],
    }
    assert pod_requests(spec) == {"cpu": 5000}
    spec["initContainers"][1] = container({"cpu": "500m"})
    assert pod_requests(spec) == {"cpu": 3000}


def test_pod_requests_adds_overhead():
    spec = {"containers": [container({"cpu": "1", "memory": "1Gi"})], "overhead": {"cpu": "250m", "memory": "64Mi"}}
    assert pod_requests(spec) == {"cpu": 1250, "memory": GI + 64 * 2**20}


# ---------------------------------------------------------------------------------------------------------
# Fit
# ---------------------------------------------------------------------------------------------------------

DUAL = Node(
    "kwok-dual-rtx5060ti",
    labels={PRODUCT: "NVIDIA-GeForce-RTX-5060-Ti", "nvidia.com/gpu.memory": "16311"},
    taints=({"key": GPU, "value": "present", "effect": "NoSchedule"},),
    allocatable={"cpu": "16", "memory": "64Gi", GPU: "2", "pods": "110"},
)
RTX4090 = Node(
    "kwok-rtx4090",
    labels={PRODUCT: "NVIDIA-GeForce-RTX-4090", "nvidia.com/gpu.memory": "24564"},
    taints=({"key": GPU, "effect": "NoSchedule"},),
    allocatable={"cpu": "7910m", "memory": "32827112Ki", GPU: "1", "pods": "110"},
)
CPU_ONLY = Node(
    "kwok-cpu-only",
    labels={"kubernetes.io/hostname": "kwok-cpu-only"},
    taints=({"key": "dedicated", "value": "batch", "effect": "NoExecute"},),
    allocatable={"cpu": "8", "memory": "16Gi", "pods": "110"},
)
NODES = [RTX4090, CPU_ONLY, DUAL]
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}


def gpu_pod(gpus: int = 1, memory: str = "16Gi", **spec) -> dict:
    return {
        "containers": [container({"cpu": "2", "memory": memory}, {GPU: str(gpus)})],
        "tolerations": [GPU_TOLERATION],
        **spec,
    }


def test_fits_one_of_three_nodes():
    assert why_unschedulable(gpu_pod(2), NODES) is None


def test_too_many_gpus_names_every_node_in_order_with_the_numbers():
    message = why_unschedulable(gpu_pod(4), NODES)
    assert message == (
        "no node can run it: "
        "kwok-cpu-only: untolerated taint dedicated=batch:NoExecute, nvidia.com/gpu 4 asked, 0 allocatable; "
        "kwok-dual-rtx5060ti: nvidia.com/gpu 4 asked, 2 allocatable; "
        "kwok-rtx4090: nvidia.com/gpu 4 asked, 1 allocatable"
    )


def test_memory_and_cpu_in_human_form():
    pod = {"containers": [container({"cpu": "8500m", "memory": "40Gi"})], "tolerations": [{"operator": "Exists"}]}
    message = why_unschedulable(pod, [RTX4090])
    assert message == (
        "no node can run it: kwok-rtx4090: cpu 8500m asked, 7910m allocatable, "
        "memory 40Gi asked, 32827112Ki (31.3Gi) allocatable"
    )


def test_node_selector_mismatch():
    pod = gpu_pod(1, nodeSelector={PRODUCT: "NVIDIA-GeForce-RTX-5060-Ti"})
    assert why_unschedulable(pod, NODES) is None  # the dual node matches
    message = why_unschedulable(pod, [RTX4090, CPU_ONLY])
    assert message is not None
    assert (
        "kwok-rtx4090: node selector nvidia.com/gpu.product=NVIDIA-GeForce-RTX-5060-Ti not matched "
        "(node has nvidia.com/gpu.product=NVIDIA-GeForce-RTX-4090)"
    ) in message
    assert "kwok-cpu-only: node selector nvidia.com/gpu.product=NVIDIA-GeForce-RTX-5060-Ti not matched," in message


@pytest.mark.parametrize(
    ("tolerations", "fits"),
    [
        ([], False),
        ([{"operator": "Exists"}], True),  # empty key + Exists tolerates every taint
        ([{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoExecute"}], True),
        ([{"key": "dedicated", "value": "batch"}], True),  # operator defaults to Equal, empty effect matches all
        ([{"key": "dedicated", "operator": "Equal", "value": "online"}], False),
        ([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}], False),  # wrong effect
        ([{"key": "dedicated", "operator": "Exists"}], True),
        ([{"key": "other", "operator": "Exists"}], False),
    ],
)
def test_taints_must_be_tolerated(tolerations, fits):
    pod = {"containers": [container({"cpu": "1"})], "tolerations": tolerations}
    message = why_unschedulable(pod, [CPU_ONLY])
    if fits:
        assert message is None
    else:
        assert message == "no node can run it: kwok-cpu-only: untolerated taint dedicated=batch:NoExecute"


def test_prefer_no_schedule_taints_do_not_block():
    node = Node("soft", taints=({"key": "x", "effect": "PreferNoSchedule"},), allocatable={"cpu": "4"})
    assert why_unschedulable({"containers": [container({"cpu": "1"})]}, [node]) is None


def test_cordoned_node():
    cordoned = Node(
        "n1",
        allocatable={"cpu": "4"},
        unschedulable=True,
        taints=({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},),
    )
    pod = {"containers": [container({"cpu": "1"})]}
    assert why_unschedulable(pod, [cordoned]) == "no node can run it: n1: cordoned (unschedulable)"
    pod["tolerations"] = [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]
    assert why_unschedulable(pod, [cordoned]) is None


def affinity(*terms: list[dict]) -> dict:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(t)} for t in terms]
            }
        }
    }


@pytest.mark.parametrize(
    ("terms", "fitting"),
    [
        ([[{"key": PRODUCT, "operator": "In", "values": ["NVIDIA-GeForce-RTX-4090"]}]], ["kwok-rtx4090"]),
        (
            [[{"key": PRODUCT, "operator": "NotIn", "values": ["NVIDIA-GeForce-RTX-4090"]}]],
            ["kwok-cpu-only", "kwok-dual-rtx5060ti"],
        ),
        ([[{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["20000"]}]], ["kwok-rtx4090"]),
        ([[{"key": "nvidia.com/gpu.memory", "operator": "Lt", "values": ["20000"]}]], ["kwok-dual-rtx5060ti"]),
        ([[{"key": PRODUCT, "operator": "Exists"}]], ["kwok-dual-rtx5060ti", "kwok-rtx4090"]),
        ([[{"key": PRODUCT, "operator": "DoesNotExist"}]], ["kwok-cpu-only"]),
        # expressions within a term are ANDed
        (
            [
                [
                    {"key": PRODUCT, "operator": "Exists"},
                    {"key": "nvidia.com/gpu.memory", "operator": "Lt", "values": ["20000"]},
                ]
            ],
            ["kwok-dual-rtx5060ti"],
        ),
        # terms are ORed
        (
            [
                [{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["20000"]}],
                [{"key": PRODUCT, "operator": "DoesNotExist"}],
            ],
            ["kwok-cpu-only", "kwok-rtx4090"],
        ),
    ],
)
def test_required_node_affinity(terms, fitting):
    pod = {
        "containers": [container({"cpu": "1"})],
        "tolerations": [{"operator": "Exists"}],
        "affinity": affinity(*terms),
    }
    fits = [n.name for n in sorted(NODES, key=lambda n: n.name) if why_unschedulable(pod, [n]) is None]
    assert fits == fitting


def test_required_node_affinity_message_and_match_fields():
    pod = gpu_pod(1, affinity=affinity([{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["30000"]}]))
    message = why_unschedulable(pod, [RTX4090])
    assert message == "no node can run it: kwok-rtx4090: required node affinity nvidia.com/gpu.memory>30000 not matched"
    by_name = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["kwok-rtx4090"]}]}
    pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] = [by_name]
    assert why_unschedulable(pod, [RTX4090]) is None
    assert why_unschedulable(pod, [DUAL]) is not None


def test_no_nodes():
    assert why_unschedulable(gpu_pod(), []) == "no node can run it: the cluster has no nodes"


def test_node_from_api():
    node = Node.from_api(
        {
            "metadata": {"name": "n1", "labels": {"a": "b"}},
            "spec": {"unschedulable": True, "taints": [{"key": "k", "effect": "NoSchedule", "timeAdded": "x"}]},
            "status": {"allocatable": {"cpu": "4", GPU: "1"}},
        }
    )
    assert node == Node("n1", {"a": "b"}, ({"key": "k", "effect": "NoSchedule"},), {"cpu": "4", GPU: "1"}, True)
    assert Node.from_api({"metadata": {"name": "bare"}}) == Node("bare", {}, (), {}, False)


# ---------------------------------------------------------------------------------------------------------
# kubeconfig
# ---------------------------------------------------------------------------------------------------------


def kubeconfig(server: str, user: dict | None = None, *, ca_data: str | None = None, **cluster) -> dict:
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "local",
        "clusters": [
            {"name": "local", "cluster": {"server": server, **cluster}},
            {"name": "other", "cluster": {"server": "https://10.0.0.1:6443"}},
        ],
        "users": [{"name": "admin", "user": user or {"token": "t0ken"}}, {"name": "viewer", "user": {}}],
        "contexts": [
            {"name": "local", "context": {"cluster": "local", "user": "admin"}},
            {"name": "remote", "context": {"cluster": "other", "user": "viewer"}},
            {"name": "broken", "context": {"cluster": "gone", "user": "admin"}},
        ],
    }


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> Path:
    """No KUBECONFIG, a home without ~/.kube, no proxies (the test server is on loopback)."""
    for var in ("KUBECONFIG", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_kubeconfig_from_a_relative_path_and_from_contents(clean_env):
    (clean_env / "kc.yaml").write_text(yaml.safe_dump(kubeconfig("https://127.0.0.1:16443/")))
    conn, where = kubeconfig_target("kc.yaml", None)
    assert where == "context local (https://127.0.0.1:16443)"
    assert conn["server"] == "https://127.0.0.1:16443"
    assert conn["token"] == "t0ken"
    conn2, where2 = kubeconfig_target(json.dumps(kubeconfig("https://127.0.0.1:16443")), None)
    assert (conn2, where2) == (conn, where)


def test_kubeconfig_file_paths_are_relative_to_the_kubeconfig(clean_env):
    sub = clean_env / "sub"
    sub.mkdir()
    user = {"client-certificate": "certs/me.crt", "client-key": "/abs/me.key"}
    (sub / "config").write_text(yaml.safe_dump(kubeconfig("https://h:1", user, **{"certificate-authority": "ca.crt"})))
    conn, _ = kubeconfig_target(str(sub / "config"), None)
    assert conn["certificate_authority"] == str(sub / "ca.crt")
    assert conn["client_certificate"] == str(sub / "certs/me.crt")
    assert conn["client_key"] == "/abs/me.key"


def test_kubeconfig_env_takes_the_first_existing_file(clean_env, monkeypatch):
    real = clean_env / "real.yaml"
    real.write_text(yaml.safe_dump(kubeconfig("https://from-env:6443")))
    environ = {"KUBECONFIG": os.pathsep.join([str(clean_env / "missing.yaml"), str(real)])}
    _, where = kubeconfig_target(None, None, environ=environ)
    assert where == "context local (https://from-env:6443)"
    # the provider's kubernetes:kubeconfig wins over the environment
    (clean_env / "kc.yaml").write_text(yaml.safe_dump(kubeconfig("https://from-config:6443")))
    assert kubeconfig_target("kc.yaml", None, environ=environ)[1] == "context local (https://from-config:6443)"


def test_kubeconfig_defaults_to_home(clean_env):
    with pytest.raises(ClusterUnavailable, match="no kubeconfig"):
        kubeconfig_target(None, None)
    (clean_env / "home" / ".kube").mkdir()
    (clean_env / "home" / ".kube" / "config").write_text(yaml.safe_dump(kubeconfig("https://home:6443")))
    assert kubeconfig_target(None, None)[1] == "context local (https://home:6443)"


def test_kubeconfig_context_selection(clean_env):
    contents = yaml.safe_dump(kubeconfig("https://127.0.0.1:16443"))
    conn, where = kubeconfig_target(contents, "remote")
    assert where == "context remote (https://10.0.0.1:6443)"
    assert conn["token"] is None


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ("nope", "context nope not found in kubernetes:kubeconfig (contexts: broken, local, remote)"),
        ("broken", "context broken: cluster 'gone' not found in kubernetes:kubeconfig"),
    ],
)
def test_kubeconfig_missing_context_or_cluster(clean_env, context, expected):
    with pytest.raises(ClusterUnavailable) as info:
        kubeconfig_target(yaml.safe_dump(kubeconfig("https://h:1")), context)
    assert info.value.message == expected


def test_kubeconfig_neither_file_nor_contents(clean_env):
    with pytest.raises(ClusterUnavailable, match="neither an existing file nor kubeconfig contents"):
        kubeconfig_target("does/not/exist.yaml", None)


# ---------------------------------------------------------------------------------------------------------
# read_nodes against a local HTTPS API server
# ---------------------------------------------------------------------------------------------------------

NODE_LIST = {
    "kind": "NodeList",
    "apiVersion": "v1",
    "items": [
        {"metadata": {"name": "zeta"}, "status": {"allocatable": {"cpu": "4"}}},
        {
            "metadata": {"name": "alpha", "labels": {PRODUCT: "NVIDIA-GeForce-RTX-4090"}},
            "spec": {"taints": [{"key": GPU, "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "8", GPU: "1"}},
        },
    ],
}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test-ca", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=alice")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext", cwd=d,
        )  # fmt: skip
    return d


class _ApiHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        peer = self.connection.getpeercert() or {}
        common_names = [v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"]
        authorized = self.headers.get("Authorization") == "Bearer t0ken" or common_names == ["alice"]
        if self.path != "/api/v1/nodes":
            self._reply(404, {"kind": "Status", "message": "not found"})
        elif not authorized:
            self._reply(401, {"kind": "Status", "message": "Unauthorized", "code": 401})
        else:
            self._reply(200, NODE_LIST)

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # failed handshakes are part of the tests
        pass


@pytest.fixture(scope="module")
def api_server(pki) -> Iterator[str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
    ctx.load_verify_locations(pki / "ca.crt")
    ctx.verify_mode = ssl.CERT_OPTIONAL
    server = _QuietServer(("127.0.0.1", 0), _ApiHandler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(directory: Path, server: str, user: dict, **cluster) -> str:
    path = directory / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(kubeconfig(server, user, **cluster)))
    return str(path)


def test_read_nodes_with_token_and_ca_data(clean_env, pki, api_server):
    path = write_kubeconfig(clean_env, api_server, {"token": "t0ken"}, ca_data=b64(pki / "ca.crt"))
    nodes = read_nodes(path, None)
    assert [n.name for n in nodes] == ["alpha", "zeta"]
    assert nodes[0].allocatable == {"cpu": "8", GPU: "1"}
    assert nodes[0].taints == ({"key": GPU, "effect": "NoSchedule"},)


def test_read_nodes_with_token_file_and_ca_file(clean_env, pki, api_server):
    (clean_env / "token").write_text("t0ken\n")
    user = {"tokenFile": "token"}
    path = write_kubeconfig(clean_env, api_server, user, **{"certificate-authority": str(pki / "ca.crt")})
    assert len(read_nodes(path, None)) == 2


def test_read_nodes_with_client_certificate_data(clean_env, pki, api_server):
    user = {"client-certificate-data": b64(pki / "client.crt"), "client-key-data": b64(pki / "client.key")}
    before = set(Path(tempfile.gettempdir()).glob("llmkube-*.pem"))
    path = write_kubeconfig(clean_env, api_server, user, ca_data=b64(pki / "ca.crt"))
    assert len(read_nodes(path, None)) == 2
    assert set(Path(tempfile.gettempdir()).glob("llmkube-*.pem")) == before  # key file removed


def test_read_nodes_wrong_token_says_401(clean_env, pki, api_server):
    path = write_kubeconfig(clean_env, api_server, {"token": "wrong"}, ca_data=b64(pki / "ca.crt"))
    with pytest.raises(ClusterUnavailable, match="401") as info:
        read_nodes(path, None)
    assert info.value.message.startswith(f"cannot list the nodes of context local ({api_server}): HTTP 401")
    assert "\n" not in info.value.message


def test_read_nodes_untrusted_server_certificate(clean_env, api_server):
    path = write_kubeconfig(clean_env, api_server, {"token": "t0ken"})  # system roots only
    with pytest.raises(ClusterUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        read_nodes(path, None)
    path = write_kubeconfig(clean_env, api_server, {"token": "t0ken"}, **{"insecure-skip-tls-verify": True})
    assert len(read_nodes(path, None)) == 2


def test_read_nodes_unreachable(clean_env, pki):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_kubeconfig(clean_env, f"https://127.0.0.1:{port}", {"token": "t0ken"}, ca_data=b64(pki / "ca.crt"))
    with pytest.raises(ClusterUnavailable, match=f"cannot reach context local \\(https://127.0.0.1:{port}\\)"):
        read_nodes(path, None, timeout=1.0)


EXEC_PLUGIN = """\
import json, os
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {"token": os.environ["PLUGIN_TOKEN"]}}))
"""


@pytest.mark.parametrize("api_version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
def test_read_nodes_with_exec_plugin(clean_env, pki, api_server, api_version):
    (clean_env / "plugin.py").write_text(EXEC_PLUGIN)
    user = {
        "exec": {
            "apiVersion": api_version,
            "command": sys.executable,
            "args": [str(clean_env / "plugin.py")],
            "env": [{"name": "PLUGIN_TOKEN", "value": "t0ken"}],
        }
    }
    path = write_kubeconfig(clean_env, api_server, user, ca_data=b64(pki / "ca.crt"))
    assert [n.name for n in read_nodes(path, None)] == ["alpha", "zeta"]


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (
            {"username": "u", "password": "p"},
            "basic authentication (username/password) in the kubeconfig is not supported",
        ),
        ({"auth-provider": {"name": "oidc"}}, "the legacy auth-provider oidc is not supported; use an exec plugin"),
        (
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "no-such-plugin-xyz"}},
            "exec credential plugin no-such-plugin-xyz not found",
        ),
        (
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}},
            "exec credential plugin apiVersion 'client.authentication.k8s.io/v1alpha1' is not supported",
        ),
    ],
)
def test_read_nodes_unsupported_auth(clean_env, user, expected):
    path = write_kubeconfig(clean_env, "https://127.0.0.1:1", user)
    with pytest.raises(ClusterUnavailable) as info:
        read_nodes(path, None)
    assert info.value.message == expected


# --- Room: what the nodes have left ---------------------------------------------------------------------------


def _room_node(name: str, gpus: int) -> cluster.Node:
    return cluster.Node(name, allocatable={"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": str(gpus), "pods": "110"})


def _gpu_spec(gpus: int, cpu: str = "2") -> dict:
    return {"containers": [{"resources": {"requests": {"cpu": cpu}, "limits": {"nvidia.com/gpu": str(gpus)}}}]}


def test_room_counts_the_pods_already_there_and_says_whose() -> None:
    pods = [cluster.Pod("ml", "trainer", "a", {}, {"cpu": 1500, "nvidia.com/gpu": 1})]
    room = cluster.Room([_room_node("a", 2)], pods, owner_of=lambda pod: None)
    assert room.place(_gpu_spec(1), 1, "ns/x") == (["a"], None)
    nodes, why = room.place(_gpu_spec(1, cpu="13"), 1, "ns/y")
    assert nodes == []
    assert why == (
        "no node has room left for it: a: cpu 13 asked, 12500m free, nvidia.com/gpu 1 asked, 0 free "
        "(in use by ml/trainer, ns/x)"
    )


def test_a_services_own_pods_make_way_for_it_and_only_for_it() -> None:
    pods = [cluster.Pod("llmkube", "x-old", "a", {"app": "x"}, {"nvidia.com/gpu": 2})]
    room = cluster.Room([_room_node("a", 2)], pods, owner_of=lambda pod: pod.labels.get("app"))
    # Another service placed first does not get x's GPUs ...
    nodes, why = room.place(_gpu_spec(2), 1, "y", "llmkube/y")
    assert nodes == [] and why is not None and "(in use by llmkube/x-old)" in why
    # ... x itself does: its update replaces its pod.
    assert room.place(_gpu_spec(2), 1, "x", "llmkube/x") == (["a"], None)


def test_room_places_every_replica_or_takes_nothing() -> None:
    room = cluster.Room([_room_node("a", 2), _room_node("b", 1)], [], owner_of=lambda pod: None)
    assert room.place(_gpu_spec(1), 4, "ns/many") == ([], room.place(_gpu_spec(1), 4, "ns/many")[1])
    # Nothing was kept by the failed attempts: three one-GPU replicas still fit, over both nodes.
    assert room.place(_gpu_spec(1), 3, "ns/three") == (["a", "b"], None)
    assert room.place(_gpu_spec(1), 1, "ns/more")[1] is not None


# --- What reaches the preview log when the kubeconfig is wrong ------------------------------------------------


def test_the_providers_cluster_setting_replaces_the_contexts(clean_env):
    contents = yaml.safe_dump(kubeconfig("https://127.0.0.1:16443"))
    conn, where = kubeconfig_target(contents, "local", "other")
    assert where == "context local (https://10.0.0.1:6443)"
    assert conn["server"] == "https://10.0.0.1:6443"
    with pytest.raises(ClusterUnavailable, match="cluster 'nowhere' not found"):
        kubeconfig_target(contents, "local", "nowhere")


@pytest.mark.parametrize(
    "broken",
    [
        {"contexts": ["local"]},  # a list of strings where entries belong
        {"clusters": [{"name": "local", "cluster": {"server": 5}}]},  # a number for a server
        {"users": [{"name": "admin", "user": {"exec": "aws"}}]},  # a string for an exec section
    ],
)
def test_a_malformed_kubeconfig_is_one_line_not_a_traceback(clean_env, broken):
    config = {**kubeconfig("https://127.0.0.1:1"), **broken}
    with pytest.raises(ClusterUnavailable) as info:
        read_nodes(yaml.safe_dump(config), None, timeout=1)
    assert "\n" not in info.value.message


def test_a_kubeconfig_value_is_never_echoed(clean_env):
    secret = '{"users": [{"name": "a", "user": {"token": "SUPERSECRET"'  # contents cut short: invalid
    with pytest.raises(ClusterUnavailable) as info:
        read_nodes(secret, None)
    assert "SUPERSECRET" not in info.value.message
    assert f"({len(secret)} characters) is neither an existing file nor kubeconfig contents" in info.value.message


def test_a_home_folder_that_does_not_exist_is_not_a_crash(clean_env):
    with pytest.raises(ClusterUnavailable):
        read_nodes("~nosuchuser-llmkube/kubeconfig", None)
