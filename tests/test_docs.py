"""The README's config reference is generated from the API models and must not drift from them."""

from __future__ import annotations

from pathlib import Path

from llmkube_components import cli
from llmkube_components.api import InferenceServiceSpec, ModelSpec
from llmkube_components.docs import config_reference

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_reference_is_current() -> None:
    assert cli.main(["docs", "--check", "--readme", str(README)]) == 0, "run `llmkube docs` and commit README.md"


def test_reference_lists_every_field_with_its_llmkube_name_and_bounds() -> None:
    text = config_reference()
    for model in (ModelSpec, InferenceServiceSpec):
        for name, field in model.model_fields.items():
            assert f"`{field.alias or name}`" in text
    assert "| `moeCPUOffload` |" in text
    assert "| `contextSize` | int |  | >= 128, <= 2097152 |" in text
    assert "| `port` | int | `8080` | >= 1, <= 65535 |" in text


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    commands = text.split("## The two commands", 1)[1].split("```sh", 1)[1].split("```", 1)[0].split()
    assert commands[0] == "tools/quickstart" and "tools/test" in commands
    assert "tools/test" in (README.parent / ".ci" / "run").read_text()


def test_check_command_accepts_the_stack_files_and_rejects_bad_ones(tmp_path: Path, capsys) -> None:
    stacks = sorted(str(p) for p in (README.parent / "stacks").glob("Pulumi.*.yaml"))
    assert cli.main(["check", *stacks]) == 0
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  llmkube:services:\n    q:\n      modelRef: nope\n")
    assert cli.main(["check", str(bad)]) == 1
    assert "error: llmkube:services.q.modelRef: 'nope' names no model" in capsys.readouterr().err


def test_plan_command_prints_a_table_and_json(capsys) -> None:
    args = ["plan", "--profile", "dual-rtx5060ti", "--model", "Qwen3.6-35B-A3B", "--context", "90112"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan for plan (auto): all layers on the GPUs; host memory request ")
    assert "\nspeed (estimates): decode " in out and " at 1K, " in out and " at 88K); prefill " in out
    assert "routed_expert" in out and "catalog estimate (Qwen3.6-35B-A3B)" in out
    assert cli.main([*args, "--cpu-moe", "--json"]) == 0
    import json

    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["mode"] == "manual" and plan["fields"] == {"moeCPUOffload": True}
    assert plan["bytes"]["host"] > 18 * 2**30  # the routed experts live in RAM
    assert set(plan["decodeTokensPerSecondByDepth"]) == {"1024", "90112"} and plan["depth"] == 0
    assert plan["bottleneck"] in ("gpu0", "gpu1", "host", "splits")
