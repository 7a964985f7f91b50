"""Security checks at preview (#11): namespaces a stack must not take over, node paths only by consent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmkube_components.errors import ConfigError
from tests.stacks import load_stack

MODEL = {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/q.gguf", "catalog": "Llama-3.2-1B"}


def problems(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load_stack({"models": {"m": MODEL}, "services": {"s": {"modelRef": "m"}}, **config}, plan=False)
    return str(info.value)


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease"])
def test_the_clusters_own_namespaces_are_refused(namespace: str) -> None:
    for create in (True, False):
        assert problems({"namespace": namespace, "createNamespace": create}) == (
            f"llmkube:namespace: {namespace!r} is reserved for the cluster's own components (kube-system, "
            "kube-public, kube-node-lease); deploy into a namespace of your own"
        )


def test_the_default_namespace_is_used_as_it_is_never_relabelled() -> None:
    assert problems({"namespace": "default"}).startswith(
        "llmkube:namespace: 'default' is shared by the whole cluster: creating it would set its Pod Security labels"
    )
    stack = load_stack(
        {
            "namespace": "default",
            "createNamespace": False,
            "models": {"m": MODEL},
            "services": {"s": {"modelRef": "m"}},
        },
        plan=False,
    )
    assert stack.namespace == "default"


def test_the_operator_is_not_installed_in_a_reserved_namespace() -> None:
    message = problems({"delivery": "operator", "operator": {"namespace": "kube-system"}})
    assert message.startswith("llmkube:operator.namespace: 'kube-system' is reserved")


@pytest.mark.parametrize("source", ["file:///data/m.gguf", "/data/m.gguf"])
def test_a_node_path_needs_explicit_consent_and_is_warned_about(source: str) -> None:
    config = {"models": {"m": {"source": source, "catalog": "Llama-3.2-1B"}}, "services": {"s": {"modelRef": "m"}}}
    with pytest.raises(ConfigError) as info:
        load_stack(config, plan=False)
    assert str(info.value).startswith(
        f"llmkube:models.m.source: {source!r} is a path of the node, mounted as hostPath, which only a privileged "
        "namespace admits"
    )
    stack = load_stack({**config, "allowHostPath": True}, plan=False)
    assert [str(w) for w in stack.warnings] == [
        "llmkube:models.m.source: a path of the node, mounted as hostPath (allowHostPath): the namespace's Pod "
        "Security is privileged, so any pod there may mount the node's files"
    ]


def test_a_standalone_model_on_a_node_path_needs_consent_too() -> None:
    from llmkube_components import pipeline

    with pytest.raises(ConfigError):
        pipeline.standalone_model("m", {"spec": {"source": "file:///data/m.gguf"}})
    built = pipeline.standalone_model("m", {"spec": {"source": "file:///data/m.gguf"}, "allowHostPath": True})
    assert built.cache_path


# --- accepted at preview, failing only at apply: now refused at preview, with path, value and what is allowed ---


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("pvc:///m.gguf", "llmkube:models.m.source: 'pvc:///m.gguf': the claim '' is not a Kubernetes object name"),
        ("pvc://Bad_Claim/m.gguf", "llmkube:models.m.source: 'pvc://Bad_Claim/m.gguf': the claim 'Bad_Claim' is not"),
        ("pvc://claim/../../x.gguf", "llmkube:models.m.source: 'pvc://claim/../../x.gguf': the path in the claim"),
        ("hf://../../x.gguf", "llmkube:models.m.source: 'hf://../../x.gguf': the organisation and repository must"),
        ("https://example.com/%2e%2e", "llmkube:models.m.source: 'https://example.com/%2e%2e': the file name must"),
        ("https://example.com/a/../../b.gguf", "llmkube:models.m.source: 'https://example.com/a/../../b.gguf': the"),
    ],
)
def test_a_source_that_would_climb_or_name_no_claim_is_refused(source: str, expected: str) -> None:
    assert problems({"models": {"m": {"source": source, "catalog": "Llama-3.2-1B"}}}).startswith(expected)


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (
            {"modelCache": {"claimName": "My_Cache"}},
            "llmkube:services.s.modelCache.claimName: 'My_Cache' is not a Kubernetes object name",
        ),
        (
            {"priorityClassName": "High Priority"},
            "llmkube:services.s.priorityClassName: 'High Priority' is not a Kubernetes",
        ),
        ({"nodeSelector": {"bad key!": "x"}}, "llmkube:services.s.nodeSelector: key 'bad key!' is not a label key"),
        ({"podLabels": {"team": "-x-"}}, "llmkube:services.s.podLabels: team='-x-': the value is not a label value"),
        ({"image": "ghcr.io/ggml-org/llama.cpp: server"}, "llmkube:services.s.image: "),
        ({"extraArgs": ["--host", "127.0.0.1"]}, "llmkube:services.s.extraArgs[0]: '--host' '127.0.0.1' would listen"),
        ({"extraArgs": ["--host=localhost"]}, "llmkube:services.s.extraArgs[0]: '--host=localhost' 'localhost'"),
    ],
)
def test_names_labels_images_and_host_are_checked_at_preview(service: dict[str, Any], expected: str) -> None:
    message = problems({"services": {"s": {"modelRef": "m", **service}}})
    assert message.startswith(expected), message


def test_the_server_may_still_listen_on_all_interfaces() -> None:
    stack = load_stack(
        {"models": {"m": MODEL}, "services": {"s": {"modelRef": "m", "extraArgs": ["--host", "0.0.0.0"]}}},
        plan=False,
    )
    assert stack.services["s"].spec.extra_args == ["--host", "0.0.0.0"]


def test_a_storage_class_and_cache_size_are_checked() -> None:
    assert problems({"modelCache": {"storageClass": "Fast SSD"}}).startswith(
        "llmkube:modelCache.storageClass: 'Fast SSD' is not a Kubernetes object name"
    )
    assert problems({"modelCache": {"size": "0"}}).startswith("llmkube:modelCache.size: 0 must be more than 0")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "a stack file is a mapping with a config: key, not a list"),
        ("config:\n  - llmkube:namespace\n", "config: must be a mapping of keys to values, not a list"),
        ("config: {llmkube:namespace: [unclosed\n", "is not YAML (line 2, column 1)"),
    ],
)
def test_the_cli_reports_a_malformed_stack_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    from llmkube_components import cli

    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(text)
    assert cli.main(["check", str(path)]) == 1
    assert cli.main(["plan", "--stack-file", str(path)]) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err


def test_the_cli_plans_a_local_file_without_a_host_path_consent(tmp_path: Path) -> None:
    # Planning reads the file on this machine; nothing is mounted into a pod.
    from llmkube_components import cli
    from testkit.gguf_files import write_dense

    path = write_dense(tmp_path / "m.gguf")
    assert cli.main(["plan", "--model", str(path), "--json"]) == 0


# --- Downloads (#11): credentials in sources, transport and digests -------------------------------------------


@pytest.mark.parametrize(
    ("source", "secret", "found"),
    [
        ("https://user:hunter2@example.com/m.gguf", "hunter2", "user information"),
        ("https://ghp_token123@example.com/m.gguf", "ghp_token123", "user information"),
        ("https://example.com/m.gguf?token=s3cr3t", "s3cr3t", "query parameter token"),
        ("https://example.com/m.gguf?download=true&access_token=s3cr3t", "s3cr3t", "query parameter access_token"),
        (
            "https://b.s3.amazonaws.com/m.gguf?X-Amz-Date=20260101&X-Amz-Signature=deadbeef01",
            "deadbeef01",
            "query parameter X-Amz-Signature",
        ),
        ("https://a.blob.core.windows.net/c/m.gguf?sv=2022-11-02&sig=abc%2Bdef", "abc%2Bdef", "query parameter sig"),
        ("hf://org/repo/m.gguf?token=hf_abcdef", "hf_abcdef", "query parameter token"),
        ("https://example.com/m.gguf?v=2;Signature=abc123", "abc123", "query parameter Signature"),
    ],
)
def test_a_source_with_a_credential_is_refused_and_never_echoed(source: str, secret: str, found: str) -> None:
    # The source would sit in the Pulumi state, the pod spec and the download logs (and a termination message).
    model = {"models": {"m": {**MODEL, "source": source}}}
    message = problems(model)
    assert message.startswith("llmkube:models.m.source: '"), message
    assert f"carries a credential ({found})" in message
    assert "pvc://" in message and "sourceSecretRef" in message  # what to do instead
    assert secret not in message and "***" in message
    from llmkube_components import pipeline

    with pytest.raises(ConfigError) as info:
        pipeline.standalone_model("m", {"spec": {"source": source}})
    assert secret not in str(info.value)


def test_a_credential_is_redacted_from_every_message() -> None:
    # Whoever writes a message (here pydantic, for a scheme we do not take), a URL's secrets never show.
    message = problems({"models": {"m": {"source": "ftp://user:hunter2@example.com/m.gguf?sig=abc&a=1"}}})
    assert message == (
        "llmkube:models.m.source: 'ftp://***@example.com/m.gguf?sig=***&a=1' is not an http(s)://, hf://, s3://, "
        "pvc:// or file:// URL, an absolute path, or a repository id such as owner/name/file.gguf"
    )


def test_a_plain_http_source_without_a_digest_is_warned_about() -> None:
    def warnings(model: dict[str, Any]) -> list[str]:
        stack = load_stack({"models": {"m": model}, "services": {"s": {"modelRef": "m"}}}, plan=False)
        return [str(w) for w in stack.warnings]

    plain = {**MODEL, "source": "http://10.0.0.5:8000/m.gguf"}
    assert warnings(plain) == [
        "llmkube:models.m.source: 'http://10.0.0.5:8000/m.gguf' is fetched over plain http and no sha256 pins it: "
        "anyone on the network path can swap the model; use https://, or set models.m.sha256"
    ]
    assert warnings({**plain, "sha256": "ab" * 32}) == []
    assert warnings(MODEL) == []


@pytest.mark.parametrize(
    ("delivery", "model", "expected"),
    [
        ("direct", {"sha256": "ab" * 32, "files": ["p2.gguf", "p3.gguf"], "fileSha256": {"p2.gguf": "cd" * 32}},
         "llmkube:models.m.files: p3.gguf would be downloaded unverified, though the model gives sha256 digests; "
         "give their digests in models.m.fileSha256 (further files) or models.m.sha256 (the model file)"),
        ("direct", {"files": ["p2.gguf"], "fileSha256": {"p2.gguf": "cd" * 32}},
         "llmkube:models.m.sha256: q.gguf would be downloaded unverified, though the model gives sha256 digests; "
         "give their digests in models.m.fileSha256 (further files) or models.m.sha256 (the model file)"),
        ("direct", {"sha256": "ab" * 32, "files": ["p2.gguf"], "fileSha256": {"p2.gguf": "cd" * 32}}, None),
        ("direct", {"files": ["p2.gguf"]}, None),  # nothing pinned: nothing promised
        ("operator", {"sha256": "ab" * 32, "files": ["p2.gguf"], "fileSha256": {"p2.gguf": "cd" * 32}},
         "llmkube:models.m.files: p2.gguf would be downloaded unverified, though the model gives sha256 digests; "
         "the LLMKube operator checks only sha256, the model file's; delivery direct checks every file"),
    ],
)  # fmt: skip
def test_files_left_out_of_a_pinned_model_are_named(delivery: str, model: dict[str, Any], expected: str | None) -> None:
    config = {"delivery": delivery, "models": {"m": {**MODEL, **model}}, "services": {"s": {"modelRef": "m"}}}
    stack = load_stack(config, plan=False)
    assert [str(w) for w in stack.warnings] == ([expected] if expected else [])


def test_a_digest_for_a_file_the_model_does_not_have_is_refused() -> None:
    model = {**MODEL, "files": ["p2.gguf"], "fileSha256": {"p2.gguf": "cd" * 32, "p3.gguf": "ab" * 32}}
    assert problems({"models": {"m": model}}) == (
        "llmkube:models.m.fileSha256.p3.gguf: 'p3.gguf' is not an entry of files (p2.gguf); key each digest by its "
        "file as files writes it"
    )
    bad_digest = problems({"models": {"m": {**model, "fileSha256": {"p2.gguf": "xyz"}}}})
    assert bad_digest == "llmkube:models.m.fileSha256.p2.gguf: 'xyz' is not 64 hexadecimal digits"


@pytest.mark.parametrize(("mbps", "expected"), [(0, "greater than or equal to 1"), (10**6, "less than or equal to")])
def test_the_download_speed_is_bounded(mbps: int, expected: str) -> None:
    message = problems({"downloadMbps": mbps})
    assert message.startswith(f"llmkube:downloadMbps: {mbps}: input should be {expected}"), message
