"""Reading the target cluster: nodes and pods over the API server's REST API, with the kubeconfig's credentials.

Deliberately small (urllib + ssl, no Kubernetes client library); every failure is a ``ClusterUnavailable``
with one line of text, so the caller can turn it into an info line and carry on.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .kubeconfig import ClusterUnavailable, Connection, kubeconfig_target
from .scheduling import Node, Pod

T = TypeVar("T")

# An exec plugin may refresh a cloud token first (aws, gcloud, az): give it longer than an API call, but never
# let a hung plugin stall `pulumi preview` indefinitely.
_EXEC_TIMEOUT_FLOOR = 20.0
_EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


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


def _run_exec_plugin(spec: dict, server: str, timeout: float, environ: Mapping[str, str]) -> dict:
    """Run a client-go exec credential plugin and return the ExecCredential's status."""
    api_version = spec.get("apiVersion", "")
    command = spec.get("command")
    if api_version not in _EXEC_API_VERSIONS:
        raise ClusterUnavailable(f"exec credential plugin apiVersion {api_version!r} is not supported")
    if not command:
        raise ClusterUnavailable("exec credential plugin has no command")
    # The plugin runs in the environment the edge passed (PATH, HOME, cloud credentials), as kubectl's would.
    env = dict(environ)
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


def _credentials(
    conn: Connection, timeout: float, environ: Mapping[str, str]
) -> tuple[str | None, bytes | None, bytes | None]:
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
        status = _run_exec_plugin(conn["exec"], conn["server"], timeout, environ)
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
        self,
        kubeconfig: str | None,
        context: str | None,
        timeout: float = 5.0,
        *,
        cluster_name: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout = timeout
        env = environ or {}
        try:
            conn, self.where = kubeconfig_target(kubeconfig, context, cluster_name, environ=env)
            token, cert, key = _credentials(conn, timeout, env)
            self.server = str(conn["server"])
            handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
            if self.server.startswith("https:"):
                handlers.append(urllib.request.HTTPSHandler(context=_ssl_context(conn, cert, key)))
        except (AttributeError, TypeError, ValueError, KeyError, RuntimeError) as exc:
            # An entry of the wrong shape (a list where a mapping belongs, a number for a server, ...).
            raise ClusterUnavailable(f"malformed kubeconfig ({type(exc).__name__}: {exc})") from None
        self.opener = urllib.request.build_opener(*handlers)
        self.headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}

    def _get(self, path: str, what: str) -> Any:
        """The decoded answer to ``GET <path>``; None for a 404."""
        where = self.where
        try:
            request = urllib.request.Request(self.server + path, headers=self.headers)
            with self.opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ClusterUnavailable(f"cannot read {what} of {where}: {_http_error(exc)}") from None
        except urllib.error.URLError as exc:
            raise ClusterUnavailable(f"cannot reach {where}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, truncated answers
            raise ClusterUnavailable(f"cannot reach {where}: {exc or type(exc).__name__}") from None
        except ValueError:
            raise ClusterUnavailable(f"{where} answered {path} with something that is not JSON") from None

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """The labels of namespace ``name`` (``GET /api/v1/namespaces/<name>``), or None when there is none."""
        found = self._get(f"/api/v1/namespaces/{urllib.parse.quote(name)}", f"namespace {name}")
        if found is None:
            return None
        try:
            return {str(k): str(v) for k, v in (found.get("metadata", {}).get("labels") or {}).items()}
        except AttributeError:
            raise ClusterUnavailable(f"{self.where} answered with a namespace {name} of another shape") from None

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
