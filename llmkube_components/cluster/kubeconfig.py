"""Which cluster the Pulumi Kubernetes provider would target: its kubeconfig resolved the provider's way.

``kubernetes:kubeconfig`` (contents, or a path), else ``KUBECONFIG`` (from the environment the edge passes),
else ``~/.kube/config``; ``kubernetes:context``, else the current-context; ``kubernetes:cluster``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import yaml


class ClusterUnavailable(Exception):
    """The cluster could not be read; ``message`` says what failed, in one line."""

    def __init__(self, message: str) -> None:
        self.message = " ".join(str(message).split())
        super().__init__(self.message)


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


def _merge_kubeconfigs(configs: list[dict]) -> dict:
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


def _load(kubeconfig: str | None, environ: Mapping[str, str]) -> tuple[dict, str]:
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
    env = environ.get("KUBECONFIG", "")
    if env:
        paths = [p for p in (_existing_file(v) for v in env.split(os.pathsep) if v) if p is not None]
        if not paths:
            raise ClusterUnavailable(f"no kubeconfig: none of the files in KUBECONFIG={env} exists")
        return _merge_kubeconfigs([_load_file(p) for p in paths]), f"kubeconfig {os.pathsep.join(map(str, paths))}"
    default = Path("~/.kube/config").expanduser()
    if not default.is_file():
        raise ClusterUnavailable(
            f"no kubeconfig: kubernetes:kubeconfig and KUBECONFIG are not set and {default} is missing"
        )
    return _load_file(default), f"kubeconfig {default}"


def kubeconfig_target(
    kubeconfig: str | None,
    context: str | None,
    cluster_name: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[Connection, str]:
    """Resolve the connection the Pulumi Kubernetes provider would use.

    ``kubeconfig`` is the ``kubernetes:kubeconfig`` config value (contents, or a path relative to the working
    directory), else ``$KUBECONFIG``, else ``~/.kube/config``; ``context`` is ``kubernetes:context``, else the
    current-context; ``cluster_name`` (``kubernetes:cluster``) replaces the context's cluster, as the provider
    does. ``environ`` is the environment the edge passes (KUBECONFIG). Returns the connection and a description
    such as ``context local (https://127.0.0.1:16443)``.
    """
    config, source = _load(kubeconfig, environ or {})
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
