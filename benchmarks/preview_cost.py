"""Preview cost: `pulumi preview` of the dev stack against a bare pulumi_kubernetes program that registers the
same Kubernetes objects, in paired runs; prints both medians and their ratio (the target is under 1.2).

The bare program is given the objects our pipeline builds for the dev stack (written once, before timing), so
the difference is what llmkube adds on top of Pulumi: imports, validation, planning, building, the components.
Both render to a folder (kubernetes:renderYamlToDirectory), plan from the catalog (LLMKUBE_OFFLINE=1) and use
a local file backend. Needs the Pulumi toolchain on PATH (`source tools/pulumi-env`). Asserts nothing.

Run from the repository root: .venv/bin/python -m benchmarks.preview_cost [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from llmkube_components import pipeline
from llmkube_components.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

BARE_PROGRAM = """\
import json

import pulumi
import pulumi_kubernetes as k8s

CLASSES = {
    "Namespace": k8s.core.v1.Namespace,
    "PersistentVolumeClaim": k8s.core.v1.PersistentVolumeClaim,
    "Service": k8s.core.v1.Service,
    "Deployment": k8s.apps.v1.Deployment,
    "HorizontalPodAutoscaler": k8s.autoscaling.v2.HorizontalPodAutoscaler,
}
for i, obj in enumerate(json.load(open("objects.json"))):
    CLASSES[obj["kind"]](f"obj-{i}", metadata=obj["metadata"], spec=obj.get("spec"))
"""


def dev_objects() -> list[dict]:
    config = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())["config"]
    raw = {k.removeprefix("llmkube:"): v for k, v in config.items() if k.startswith("llmkube:")}
    built = pipeline.platform(raw, Settings(offline=True))
    return [*built.namespace, *built.cache, *(m for s in built.services.values() for m in s.workloads)]


def project(folder: Path, *, bare: bool) -> Path:
    folder.mkdir()
    if bare:
        name = "bare"
        (folder / "__main__.py").write_text(BARE_PROGRAM)
        (folder / "objects.json").write_text(json.dumps(dev_objects()))
        stack = {"config": {"kubernetes:renderYamlToDirectory": "rendered/dev"}}
        (folder / "Pulumi.dev.yaml").write_text(yaml.safe_dump(stack))
        (folder / "Pulumi.yaml").write_text(
            yaml.safe_dump({"name": name, "runtime": {"name": "python", "options": {"virtualenv": ".venv"}}})
        )
    else:
        shutil.copy(ROOT / "Pulumi.yaml", folder / "Pulumi.yaml")
        shutil.copy(ROOT / "__main__.py", folder / "__main__.py")
        shutil.copytree(ROOT / "stacks", folder / "stacks")
    (folder / ".venv").symlink_to(ROOT / ".venv")
    (folder / "state").mkdir()
    return folder


def pulumi(folder: Path, *args: str) -> float:
    env = {
        **os.environ,
        "PULUMI_BACKEND_URL": f"file://{folder / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "llmkube-dev",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "LLMKUBE_OFFLINE": "1",
    }
    start = time.perf_counter()
    done = subprocess.run(
        ["pulumi", *args, "--non-interactive"], cwd=folder, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"pulumi {' '.join(args)} failed in {folder}:\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="paired runs (default 7)")
    ns = parser.parse_args()
    if shutil.which("pulumi") is None:
        sys.exit("pulumi is not on PATH: source tools/pulumi-env first")
    with tempfile.TemporaryDirectory(prefix="preview-cost-") as tmp:
        ours = project(Path(tmp) / "llmkube", bare=False)
        bare = project(Path(tmp) / "bare", bare=True)
        for folder in (ours, bare):
            pulumi(folder, "stack", "init", "dev")
            pulumi(folder, "preview", "--stack", "dev")  # warm-up: plugin load, bytecode, metadata cache
        times: dict[str, list[float]] = {"llmkube": [], "bare": []}
        for i in range(ns.runs):
            # Alternate which goes first, so a slow moment of the machine falls on both alike.
            order = [("llmkube", ours), ("bare", bare)] if i % 2 == 0 else [("bare", bare), ("llmkube", ours)]
            for name, folder in order:
                times[name].append(pulumi(folder, "preview", "--stack", "dev"))
    ratios = [a / b for a, b in zip(times["llmkube"], times["bare"], strict=True)]
    for name, values in times.items():
        print(f"{name:8} median {statistics.median(values):6.2f} s  min {min(values):6.2f}  max {max(values):6.2f}")
    ratio = statistics.median(times["llmkube"]) / statistics.median(times["bare"])
    print(f"ratio of medians {ratio:.2f} (median of paired ratios {statistics.median(ratios):.2f}; target < 1.2)")


if __name__ == "__main__":
    main()
