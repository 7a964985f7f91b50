"""The real Pulumi CLI, Python language host and Kubernetes provider on the dev stack (no cluster needed).

The dev stack renders its manifests to a folder (kubernetes:renderYamlToDirectory), so `pulumi preview` and
`pulumi up` run for real here: the engine, the provider's schema checks and its YAML rendering. The set of
objects rendered must be exactly the set the mock-based component tests see.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from tests.e2e.required import required
from tests.pulumi_program import ROOT, install_mocks, run_main, stack_config

pytestmark = pytest.mark.e2e

PULUMI = required(
    shutil.which("pulumi"), "pulumi is not on PATH (tools/test sources tools/pulumi-env, which builds it)"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the Pulumi project in a temporary folder, with its own file backend and the repo's venv."""
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "stacks", tmp_path / "stacks")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "state").mkdir()
    return tmp_path


def pulumi_cli(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PULUMI_BACKEND_URL": f"file://{project / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "llmkube-test",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    }
    result = subprocess.run(
        [PULUMI, *args, "--non-interactive", "--color", "never"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"pulumi {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def rendered_objects(folder: Path) -> set[tuple[str, str, str]]:
    objects = set()
    for path in folder.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                meta = doc["metadata"]
                objects.add((doc["kind"], meta.get("namespace", ""), meta["name"]))
    return objects


def mocked_objects(config: dict[str, Any]) -> set[tuple[str, str, str]]:
    mocks = install_mocks(config)

    @pulumi.runtime.test
    def program() -> None:
        run_main()

    program()
    return {
        (r.kind, (r.inputs["metadata"]).get("namespace", ""), r.object_name)
        for r in mocks.resources
        if r.type.startswith("kubernetes:")
    }


def test_preview_and_up_of_the_dev_stack_render_what_the_mocks_see(project: Path) -> None:
    pulumi_cli(project, "stack", "init", "dev")
    preview = pulumi_cli(project, "preview", "--stack", "dev")
    assert "llmkube:index:Platform" in preview.stdout

    pulumi_cli(project, "up", "--stack", "dev", "--yes", "--skip-preview")
    rendered = rendered_objects(project / "rendered" / "dev")
    assert ("Deployment", "llmkube", "llama32-1b") in rendered
    assert rendered == mocked_objects(stack_config("dev"))

    outputs = yaml.safe_load(pulumi_cli(project, "stack", "output", "--stack", "dev", "--json").stdout)
    assert outputs["services"]["llama32-1b"]["baseUrl"] == "http://llama32-1b.llmkube.svc.cluster.local:8080/v1"

    # Nothing changed, so nothing to do: the program is deterministic.
    pulumi_cli(project, "preview", "--stack", "dev", "--expect-no-changes")


def test_bad_config_fails_preview_with_the_clear_error_and_no_stack_trace(project: Path) -> None:
    pulumi_cli(project, "stack", "init", "dev")
    pulumi_cli(project, "config", "set", "--stack", "dev", "--path", "llmkube:services.llama32-1b.contextSize", "50")
    result = pulumi_cli(project, "preview", "--stack", "dev", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "llmkube:services.llama32-1b.contextSize: 50: input should be greater than or equal to 128" in output
    assert "Traceback" not in output
    assert not (project / "rendered").exists()
