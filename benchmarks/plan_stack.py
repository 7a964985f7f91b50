"""Planning cost: 100 services through the pipeline's load (validation, resolution, checks, planning).

Plans from the catalog (offline): the cost measured is the planner's. Prints figures; asserts nothing. The
target (issue 3) is under 1 s for 100 services from cached metadata.
Run from the repository root: .venv/bin/python -m benchmarks.plan_stack
"""

from __future__ import annotations

import time
from typing import Any

from llmkube_components.pipeline import load
from llmkube_components.planner.stack import PlannedStack
from llmkube_components.settings import Settings

SETTINGS = Settings(offline=True)


def load_stack(raw: dict[str, Any]) -> PlannedStack:
    return load(raw, SETTINGS)


SOURCE = "https://huggingface.co/ggml-org/Qwen3.6-35B-A3B-GGUF/resolve/main/Qwen3.6-35B-A3B-Q4_K_M.gguf"


def stack(profile: str, n: int) -> dict:
    services = {f"s{i}": {"modelRef": "m", "contextSize": 4096 * (1 + i % 32)} for i in range(n)}
    return {"hardware": profile, "models": {"m": {"source": SOURCE}}, "services": services}


def main() -> None:
    load_stack(stack("dual-rtx5060ti", 1))  # imports and the catalog, once
    print(f"{'profile':16} {'services':>8} {'seconds':>8}  placements chosen")
    for profile in ("dual-rtx5060ti", "rtx4090", {"extends": "rtx4090", "gpu": {"memory": "8Gi"}}):
        raw = stack(profile, 100)
        start = time.perf_counter()
        planned = load_stack(raw)
        seconds = time.perf_counter() - start
        chosen: dict[str, int] = {}
        for plan in planned.plans.values():
            label = plan.chosen.label.split(" (")[0]
            chosen[label] = chosen.get(label, 0) + 1
        name = profile if isinstance(profile, str) else "rtx4090 at 8Gi"
        print(f"{name:16} {len(planned.plans):>8} {seconds:>8.3f}  {chosen}")


if __name__ == "__main__":
    main()
