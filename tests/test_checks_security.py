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
