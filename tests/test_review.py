"""What a reviewer reads: llmkube plan --markdown and --compare (the CLI, on the stack files)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from llmkube_components import cli, review

STACK = Path(__file__).resolve().parent.parent / "stacks" / "Pulumi.dual-5060ti.yaml"


def plan(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = cli.main(["plan", *args])
    return status, capsys.readouterr().out


def edited(tmp_path: Path, **fields: object) -> Path:
    document = yaml.safe_load(STACK.read_text())
    service = document["config"]["llmkube:services"]["qwen36-hybrid"]
    for key, value in fields.items():
        if value is None:
            service.pop(key, None)
        else:
            service[key] = value
    path = tmp_path / "head.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_markdown_is_one_table_row_per_service(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = plan(["--stack-file", str(STACK), "--markdown"], capsys)
    assert status == 0
    assert review.HEADER in out
    (row,) = [line for line in out.splitlines() if line.startswith("| qwen36-hybrid |")]
    assert row.endswith("| fits |") and "GiB" in row


def test_compare_shows_flags_memory_and_speed_deltas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, base = plan(["--stack-file", str(STACK), "--json"], capsys)
    assert status == 0 and "serverArgs" in json.loads(base)["qwen36-hybrid"]
    (tmp_path / "base.json").write_text(base)
    head = edited(tmp_path, contextSize=32768, moeCPUOffload=None, moeCPULayers=30)
    status, out = plan(["--stack-file", str(head), "--compare", str(tmp_path / "base.json")], capsys)
    assert status == 0
    (line,) = [ln for ln in out.splitlines() if ln.startswith("- **qwen36-hybrid**:")]
    assert "`--ctx-size` 90112 -> 32768" in line and "`--cpu-moe` on -> unset" in line, line
    assert "host RAM: 28.2 -> " in line and "memory request: 32Gi -> " in line, line
    before = json.loads(base)["qwen36-hybrid"]["decodeTokensPerSecond"]
    assert re.search(rf"decode: {before} -> \d+\.\d tok/s \(\+\d+\.\d\)", line), line  # experts back on a GPU: faster
    unchanged = plan(["--stack-file", str(STACK), "--compare", str(tmp_path / "base.json")], capsys)[1]
    assert "- **qwen36-hybrid**: no change" in unchanged


def test_compare_says_when_the_head_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "base.json").write_text(plan(["--stack-file", str(STACK), "--json"], capsys)[1])
    head = edited(tmp_path, contextSize=2097152, offload="manual", moeCPUOffload=None, noKvOffload=None)
    status, out = plan(["--stack-file", str(head), "--compare", str(tmp_path / "base.json")], capsys)
    assert status == 1
    (line,) = [ln for ln in out.splitlines() if ln.startswith("- **qwen36-hybrid**:")]
    assert line.startswith("- **qwen36-hybrid**: fits -> **does not fit**"), line


def test_added_and_removed_services() -> None:
    text = review.compare({"old": {"placement": "x"}}, {"new": {"placement": "y", "bytes": {"host": 2**30}}})
    assert "- **new**: added: new | y |" in text and "- **old**: removed" in text
