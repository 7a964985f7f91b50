"""What the target cluster's nodes can run: read them with the Pulumi provider's kubeconfig, and say why a pod
fits none of them (it would stay Pending forever) before anything deploys.

The reader is deliberately small (urllib + ssl, no Kubernetes client library) and every failure it meets is a
``ClusterUnavailable`` with one line of text, so the caller can turn it into a warning and carry on.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import os
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import yaml

from .api.base import parse_quantity as _exact_quantity

NODE_CHECK_ENV = "LLMKUBE_NODE_CHECK"
T = TypeVar("T")

# An exec plugin may refresh a cloud token first (aws, gcloud, az): give it longer than an API call, but never
# let a hung plugin stall `pulumi preview` indefinitely.
_EXEC_TIMEOUT_FLOOR = 20.0
_EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
_UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
_GI = 2**30


# ---------------------------------------------------------------------------------------------------------
# Nodes and errors
# ---------------------------------------------------------------------------------------------------------


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


class ClusterUnavailable(Exception):
    """The cluster could not be read; ``message`` says what failed, in one line."""

    def __init__(self, message: str) -> None:
        self.message = " ".join(str(message).split())
        super().__init__(self.message)


def node_check_enabled() -> bool:
    """False when ``LLMKUBE_NODE_CHECK`` is 0/false/no/off; reading the cluster is on by default."""
    return os.environ.get(NODE_CHECK_ENV, "").strip().lower() not in ("0", "false", "no", "off")


# ---------------------------------------------------------------------------------------------------------
# kubeconfig
# ---------------------------------------------------------------------------------------------------------


class Connection(TypedDict):
    """How to reach and authenticate to one cluster; file paths are absolute, ``*_data`` as in the kubeconfig."""

    server: str
    certificate_authority: str | None
    certificate_authority_data: str | None  # base64 PEM
    insecure: bool
    token: str | None
    token_file: str | None
    client_certificate: str | None
    client_certificate_data: str | None  # base64 PEM
    client_key: str | None
    client_key_data: str | None  # base64 PEM
    exec: dict[str, Any] | None
    basic_auth: bool
    auth_provider: str | None


# Fields holding file paths, which client-go resolves relative to the kubeconfig file that sets them.
_PATH_FIELDS = {
    "clusters": ("cluster", ("certificate-authority",)),
    "users": ("user", ("client-certificate", "client-key", "tokenFile")),
}


def _load_kubeconfig_text(text: str, source: str, base: Path) -> dict:
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ClusterUnavailable(f"{source} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise ClusterUnavailable(f"{source} is not a kubeconfig")
    for section, (inner, keys) in _PATH_FIELDS.items():
        for entry in config.get(section) or []:
            body = (entry or {}).get(inner) or {}
            for key in keys:
                if body.get(key):
                    body[key] = str(base / Path(str(body[key])).expanduser())
            command = (body.get("exec") or {}).get("command") if inner == "user" else None
            if command and os.sep in str(command) and not os.path.isabs(str(command)):
                body["exec"]["command"] = str(base / str(command))
    return config


def _load_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ClusterUnavailable(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from None
    return _load_kubeconfig_text(text, f"kubeconfig {path}", path.parent)


def _existing_file(value: str) -> Path | None:
    try:
        path = Path(value).expanduser()
        # Relative paths inside are taken from the folder of the path as given (client-go), not a link's target.
        return path.absolute() if path.is_file() else None
    except (OSError, ValueError, RuntimeError):  # too long for a file name, a NUL byte, ~nosuchuser
        return None


def _merge(configs: list[dict]) -> dict:
    """client-go's merge of several kubeconfig files: the first file to set a value or name an entry wins."""
    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    for config in configs:
        if not merged.get("current-context") and config.get("current-context"):
            merged["current-context"] = config["current-context"]
        for section in ("clusters", "users", "contexts"):
            known = {e.get("name") for e in merged[section]}
            merged[section] += [e for e in config.get(section) or [] if e and e.get("name") not in known]
    return merged


def _entry(config: dict, section: str, name: str) -> dict | None:
    for entry in config.get(section) or []:
        if entry and entry.get("name") == name:
            return entry.get(section[:-1]) or {}
    return None


def _load(kubeconfig: str | None) -> tuple[dict, str]:
    """The kubeconfig the Pulumi provider would load, and a name for it in messages."""
    if kubeconfig is not None and kubeconfig.strip():
        path = _existing_file(kubeconfig.strip())
        if path is not None:
            return _load_file(path), f"kubeconfig {path}"
        # Like the provider: a value that is no existing file is taken as the kubeconfig's contents.
        # Never echo the value: it may be kubeconfig contents (a secret) cut short.
        neither = ClusterUnavailable(
            f"kubernetes:kubeconfig ({len(kubeconfig.strip())} characters) is neither an existing file nor "
            "kubeconfig contents"
        )
        try:
            config = _load_kubeconfig_text(kubeconfig, "kubernetes:kubeconfig", Path.cwd())
        except ClusterUnavailable:
            raise neither from None
        if not any(config.get(k) for k in ("clusters", "contexts", "users", "current-context")):
            raise neither
        return config, "kubernetes:kubeconfig"
    env = os.environ.get("KUBECONFIG", "")
    if env:
        paths = [p for p in (_existing_file(v) for v in env.split(os.pathsep) if v) if p is not None]
        if not paths:
            raise ClusterUnavailable(f"no kubeconfig: none of the files in KUBECONFIG={env} exists")
        return _merge([_load_file(p) for p in paths]), f"kubeconfig {os.pathsep.join(map(str, paths))}"
    default = Path("~/.kube/config").expanduser()
    if not default.is_file():
        raise ClusterUnavailable(
            f"no kubeconfig: kubernetes:kubeconfig and KUBECONFIG are not set and {default} is missing"
        )
    return _load_file(default), f"kubeconfig {default}"


def kubeconfig_target(
    kubeconfig: str | None, context: str | None, cluster_name: str | None = None
) -> tuple[Connection, str]:
    """Resolve the connection the Pulumi Kubernetes provider would use.

    ``kubeconfig`` is the ``kubernetes:kubeconfig`` config value (contents, or a path relative to the working
    directory), else ``$KUBECONFIG``, else ``~/.kube/config``; ``context`` is ``kubernetes:context``, else the
    current-context; ``cluster_name`` (``kubernetes:cluster``) replaces the context's cluster, as the provider
    does. Returns the connection and a description such as ``context local (https://127.0.0.1:16443)``.
    """
    config, source = _load(kubeconfig)
    name = context or config.get("current-context")
    if not name:
        raise ClusterUnavailable(f"{source} has no current-context and kubernetes:context is not set")
    ctx = _entry(config, "contexts", name)
    if ctx is None:
        known = ", ".join(sorted(str(e.get("name")) for e in config.get("contexts") or [] if e)) or "none"
        raise ClusterUnavailable(f"context {name} not found in {source} (contexts: {known})")
    cluster_key = cluster_name or str(ctx.get("cluster", ""))
    cluster = _entry(config, "clusters", cluster_key)
    if cluster is None:
        raise ClusterUnavailable(f"context {name}: cluster {cluster_key!r} not found in {source}")
    if not cluster.get("server"):
        raise ClusterUnavailable(f"context {name}: cluster {cluster_key!r} has no server")
    user: dict | None = {}
    if ctx.get("user"):
        user = _entry(config, "users", str(ctx["user"]))
        if user is None:
            raise ClusterUnavailable(f"context {name}: user {ctx['user']!r} not found in {source}")
    user = user or {}
    server = str(cluster["server"]).rstrip("/")
    connection = Connection(
        server=server,
        certificate_authority=cluster.get("certificate-authority"),
        certificate_authority_data=cluster.get("certificate-authority-data"),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        token=user.get("token"),
        token_file=user.get("tokenFile"),
        client_certificate=user.get("client-certificate"),
        client_certificate_data=user.get("client-certificate-data"),
        client_key=user.get("client-key"),
        client_key_data=user.get("client-key-data"),
        exec=user.get("exec"),
        basic_auth=bool(user.get("username") or user.get("password")),
        auth_provider=(user.get("auth-provider") or {}).get("name") if user.get("auth-provider") else None,
    )
    return connection, f"context {name} ({server})"


# ---------------------------------------------------------------------------------------------------------
# Reading the nodes
# ---------------------------------------------------------------------------------------------------------


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=False)
    except ValueError:
        raise ClusterUnavailable(f"{what} is not valid base64") from None


def _read_path(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ClusterUnavailable(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _run_exec_plugin(spec: dict, server: str, timeout: float) -> dict:
    """Run a client-go exec credential plugin and return the ExecCredential's status."""
    api_version = spec.get("apiVersion", "")
    command = spec.get("command")
    if api_version not in _EXEC_API_VERSIONS:
        raise ClusterUnavailable(f"exec credential plugin apiVersion {api_version!r} is not supported")
    if not command:
        raise ClusterUnavailable("exec credential plugin has no command")
    env = dict(os.environ)
    env.update({str(e["name"]): str(e.get("value", "")) for e in spec.get("env") or [] if e and e.get("name")})
    info: dict[str, Any] = {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    if spec.get("provideClusterInfo"):
        info["spec"]["cluster"] = {"server": server}
    env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
    argv = [str(command), *(str(a) for a in spec.get("args") or [])]
    bound = max(timeout, _EXEC_TIMEOUT_FLOOR)
    try:
        done = subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=bound, check=False, text=True
        )
    except FileNotFoundError:
        hint = (spec.get("installHint") or "").strip().splitlines()
        found = f"exec credential plugin {command} not found" + (f" ({hint[0]})" if hint else "")
        raise ClusterUnavailable(found) from None
    except subprocess.TimeoutExpired:
        raise ClusterUnavailable(f"exec credential plugin {command} did not finish within {bound:g}s") from None
    except OSError as exc:
        raise ClusterUnavailable(f"exec credential plugin {command} failed to start: {exc.strerror or exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [""])[-1]
        raise ClusterUnavailable(f"exec credential plugin {command} exited with {done.returncode}: {last}".rstrip(": "))
    try:
        status = json.loads(done.stdout).get("status") or {}
    except (ValueError, AttributeError):
        raise ClusterUnavailable(f"exec credential plugin {command} printed no ExecCredential JSON") from None
    if not status.get("token") and not (status.get("clientCertificateData") and status.get("clientKeyData")):
        raise ClusterUnavailable(f"exec credential plugin {command} returned neither a token nor a client certificate")
    return status


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A temp file only this user can read, deleted on exit (ssl.load_cert_chain takes paths only)."""
    fd, path = tempfile.mkstemp(prefix="llmkube-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _ssl_context(conn: Connection, cert_pem: bytes | None, key_pem: bytes | None) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context()
        if conn["insecure"]:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif conn["certificate_authority_data"]:
            ctx = ssl.create_default_context(
                cadata=_b64(conn["certificate_authority_data"], "certificate-authority-data").decode("ascii")
            )
        elif conn["certificate_authority"]:
            ctx = ssl.create_default_context(cafile=conn["certificate_authority"])
        if cert_pem and key_pem:
            with _private_file(cert_pem.rstrip(b"\n") + b"\n" + key_pem) as path:
                ctx.load_cert_chain(path)
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise ClusterUnavailable(f"bad TLS material in the kubeconfig: {exc}") from None
    except OSError as exc:
        raise ClusterUnavailable(f"cannot load TLS files from the kubeconfig: {exc.strerror or exc}") from None
    return ctx


def _credentials(conn: Connection, timeout: float) -> tuple[str | None, bytes | None, bytes | None]:
    """(bearer token, client certificate PEM, client key PEM) for the connection's user."""
    if conn["basic_auth"]:
        raise ClusterUnavailable("basic authentication (username/password) in the kubeconfig is not supported")
    if conn["auth_provider"]:
        raise ClusterUnavailable(
            f"the legacy auth-provider {conn['auth_provider']} is not supported; use an exec plugin"
        )
    token = conn["token"]
    if conn["token_file"]:
        token = _read_path(conn["token_file"], "tokenFile").decode("utf-8", "replace").strip()
    cert = key = None
    if conn["client_certificate_data"]:
        cert = _b64(conn["client_certificate_data"], "client-certificate-data")
    elif conn["client_certificate"]:
        cert = _read_path(conn["client_certificate"], "client-certificate")
    if conn["client_key_data"]:
        key = _b64(conn["client_key_data"], "client-key-data")
    elif conn["client_key"]:
        key = _read_path(conn["client_key"], "client-key")
    if conn["exec"] and not token and not (cert and key):
        status = _run_exec_plugin(conn["exec"], conn["server"], timeout)
        token = status.get("token") or None
        if status.get("clientCertificateData") and status.get("clientKeyData"):  # PEM text, not base64
            cert, key = status["clientCertificateData"].encode(), status["clientKeyData"].encode()
    return token, cert, key


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The API server never redirects a list; following one would hand the bearer token to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _http_error(exc: urllib.error.HTTPError) -> str:
    detail = ""
    with contextlib.suppress(Exception):
        detail = str(json.loads(exc.read(4096)).get("message", ""))
    text = f"HTTP {exc.code} {exc.reason}"
    if exc.code == 401:
        text += " (the credentials were rejected)"
    return f"{text}: {detail}" if detail else text


# Pods that hold node resources: bound to a node and not finished.
_BOUND_PODS = "/api/v1/pods?" + urllib.parse.urlencode(
    {"fieldSelector": "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"}
)


class ClusterReader:
    """Lists objects of the cluster the Pulumi provider would target. The kubeconfig, the credentials (an exec
    plugin runs here, once) and the TLS context are resolved when it is made; ClusterUnavailable on any failure.
    """

    def __init__(
        self, kubeconfig: str | None, context: str | None, timeout: float = 5.0, *, cluster_name: str | None = None
    ) -> None:
        self.timeout = timeout
        try:
            conn, self.where = kubeconfig_target(kubeconfig, context, cluster_name)
            token, cert, key = _credentials(conn, timeout)
            self.server = str(conn["server"])
            handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
            if self.server.startswith("https:"):
                handlers.append(urllib.request.HTTPSHandler(context=_ssl_context(conn, cert, key)))
        except (AttributeError, TypeError, ValueError, KeyError, RuntimeError) as exc:
            # An entry of the wrong shape (a list where a mapping belongs, a number for a server, ...).
            raise ClusterUnavailable(f"malformed kubeconfig ({type(exc).__name__}: {exc})") from None
        self.opener = urllib.request.build_opener(*handlers)
        self.headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}

    def _items(self, path: str, kind: str, parse: Callable[[dict], T]) -> list[T]:
        """The parsed items of the list ``GET <path>``."""
        where = self.where
        try:
            request = urllib.request.Request(self.server + path, headers=self.headers)
            with self.opener.open(request, timeout=self.timeout) as response:
                return [parse(item) for item in json.loads(response.read())["items"] or []]
        except urllib.error.HTTPError as exc:
            raise ClusterUnavailable(f"cannot list the {kind}s of {where}: {_http_error(exc)}") from None
        except urllib.error.URLError as exc:
            raise ClusterUnavailable(f"cannot reach {where}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, truncated answers
            raise ClusterUnavailable(f"cannot reach {where}: {exc or type(exc).__name__}") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ClusterUnavailable(
                f"{where} answered {path} with something that is not a {kind.title()}List"
            ) from None

    def nodes(self) -> list[Node]:
        """The cluster's nodes (``GET /api/v1/nodes``), sorted by name."""
        return sorted(self._items("/api/v1/nodes", "node", Node.from_api), key=lambda n: n.name)

    def pods(self) -> list[Pod]:
        """The pods bound to nodes and not finished, in every namespace (a 403 when the credentials may not
        list pods is a ClusterUnavailable too)."""
        return sorted(self._items(_BOUND_PODS, "pod", Pod.from_api), key=lambda p: (p.node, p.namespace, p.name))


def read_nodes(
    kubeconfig: str | None, context: str | None, timeout: float = 5.0, *, cluster_name: str | None = None
) -> list[Node]:
    """The cluster's nodes, sorted by name; ClusterUnavailable on any failure."""
    return ClusterReader(kubeconfig, context, timeout, cluster_name=cluster_name).nodes()


def read_pods(
    kubeconfig: str | None, context: str | None, timeout: float = 5.0, *, cluster_name: str | None = None
) -> list[Pod]:
    """The pods bound to nodes and not finished; ClusterUnavailable on any failure."""
    return ClusterReader(kubeconfig, context, timeout, cluster_name=cluster_name).pods()


# ---------------------------------------------------------------------------------------------------------
# Requests and fit
# ---------------------------------------------------------------------------------------------------------


def parse_quantity(value: str | int | float, *, milli: bool = False) -> int:
    """A Kubernetes quantity as an integer, rounded up; ``milli=True`` gives thousandths (millicores for cpu)."""
    exact = _exact_quantity(value)
    return math.ceil(exact * 1000 if milli else exact)


def _amount(resource: str, value: str | int | float) -> int:
    return parse_quantity(value, milli=resource == "cpu")


def _container_requests(container: dict) -> dict[str, int]:
    resources = container.get("resources") or {}
    # The API server copies a limit into a missing request; GPUs usually set only the limit.
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: _amount(name, value) for name, value in merged.items()}


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
    _add(total, {name: _amount(name, value) for name, value in (pod_spec.get("overhead") or {}).items()})
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


def _tolerates(toleration: dict, taint: dict[str, str]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if key == "":
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    return operator == "Exists" or (operator == "Equal" and (toleration.get("value") or "") == taint.get("value", ""))


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
    if node.unschedulable and not any(_tolerates(t, cordon_taint) for t in tolerations):
        reasons.append("cordoned (unschedulable)")
    selector = pod_spec.get("nodeSelector") or {}
    for key, want in sorted(selector.items()):
        if node.labels.get(key) != str(want):
            have = f" (node has {key}={node.labels[key]})" if key in node.labels else ""
            reasons.append(f"node selector {key}={want} not matched{have}")
    affinity = _affinity_failure(pod_spec, node)
    if affinity:
        reasons.append(affinity)
    for taint in node.taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if node.unschedulable and taint.get("key") == _UNSCHEDULABLE_TAINT:
            continue  # already said "cordoned", or tolerated above
        if not any(_tolerates(t, taint) for t in tolerations):
            reasons.append(f"untolerated taint {_taint_text(taint)}")
    needs = dict(requests)
    if "pods" in node.allocatable:
        needs.setdefault("pods", 1)
    for resource, asked in sorted(needs.items()):
        if asked <= 0:
            continue
        original = node.allocatable.get(resource)
        try:
            have = _amount(resource, original) if original is not None else 0
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
                have = _amount(resource, value) - self.used[node.name].get(resource, 0)
            except ValueError:
                continue
            free[resource] = f"{max(have, 0)}m" if resource == "cpu" else str(max(have, 0))
        return Node(node.name, node.labels, node.taints, free, node.unschedulable)

    def place(
        self, pod_spec: dict, replicas: int, owner: str, label: str | None = None
    ) -> tuple[list[str], str | None]:
        """Give ``replicas`` pods of service ``owner`` room, after its own running pods made way: (the nodes
        they got, None), or ([], why not). ``label`` names its reservations in messages (default: ``owner``)."""
        label = label or owner
        for pod in self.own.pop(owner, []):
            self._give_back(pod.node, pod.requests, f"{pod.namespace}/{pod.name}")
        requests = pod_requests(pod_spec)
        taken: list[str] = []
        for _ in range(replicas):
            node = next((n for n in self.nodes if not _node_failures(pod_spec, requests, self._free(n))), None)
            if node is None:
                why = self._why_not(pod_spec, requests)
                for name in taken:  # what does not all fit takes nothing
                    self._give_back(name, requests, label)
                return [], why
            self._take(node.name, requests, label)
            taken.append(node.name)
        return sorted(set(taken)), None

    def _why_not(self, pod_spec: dict, requests: dict[str, int]) -> str:
        clauses = []
        for node in self.nodes:
            reasons = _node_failures(pod_spec, requests, self._free(node), left="free")
            users = sorted(set(self.users[node.name]))
            clauses.append(f"{node.name}: {', '.join(reasons)}" + (f" (in use by {', '.join(users)})" if users else ""))
        return "no node has room left for it: " + "; ".join(clauses)
