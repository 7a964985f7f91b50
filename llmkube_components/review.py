"""What a reviewer reads on a pull request: the stack's plans as Markdown, and what changed against the base
branch's plans (``llmkube plan --json`` of the base), per service.

Pure formatting over the plan JSON (``ServicePlan.output()`` plus the service's ``serverArgs``): no planner, no
Pulumi. A service missing on one side is added or removed; a service whose plan failed on the head side carries
its problems instead of a plan, and shows as "does not fit".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Plan = Mapping[str, Any]
GIB = 2**30
HOST = "host"


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.1f} GiB"


def _devices(plan: Plan) -> dict[str, int]:
    return {str(k): int(v) for k, v in (plan.get("bytes") or {}).items()}


def _gpus(plan: Plan) -> str:
    gpus = {k: v for k, v in _devices(plan).items() if k != HOST}
    return ", ".join(f"{k} {_gib(v)}" for k, v in sorted(gpus.items())) or "-"


def _fits(plan: Plan) -> bool:
    return not plan.get("problems")


def _row(name: str, plan: Plan) -> str:
    if not _fits(plan):
        return f"| {name} | does not fit | | | | | {'; '.join(plan['problems'])} |"
    decode = plan.get("decodeTokensPerSecond")
    return (
        f"| {name} | {plan.get('placement', '-')} | {_gpus(plan)} | {_gib(_devices(plan).get(HOST))} | "
        f"{plan.get('hostMemoryRequest', '-')} | {decode if decode is not None else '-'} | fits |"
    )


HEADER = (
    "| service | placement | VRAM per GPU | host RAM | memory request | decode tok/s | fits |\n"
    "|---|---|---|---|---|---|---|"
)


def markdown(plans: Mapping[str, Plan], title: str = "llmkube plan") -> str:
    """The plans as one compact Markdown table."""
    rows = [_row(name, plan) for name, plan in sorted(plans.items())]
    return "\n".join([f"### {title}", "", HEADER, *rows, ""])


def _args(plan: Plan) -> dict[str, str]:
    """The server's flags with their values (a switch reads ""), --model left out (its path is not a change)."""
    args = list(plan.get("serverArgs") or [])
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        flag = args[i]
        value = args[i + 1] if i + 1 < len(args) and not str(args[i + 1]).startswith("--") else None
        if flag != "--model":
            out[flag] = "" if value is None else str(value)
        i += 1 if value is None else 2
    return out


def _delta(before: float | None, after: float | None, unit: str, scale: float = 1.0, digits: int = 1) -> str:
    if before is None and after is None:
        return "-"
    if before is None or after is None:
        shown = ["-" if v is None else str(round(v / scale, digits)) for v in (before, after)]
        return f"{shown[0]} -> {shown[1]} {unit}"
    change = (after - before) / scale
    sign = "+" if change > 0 else ""
    return f"{round(before / scale, digits)} -> {round(after / scale, digits)} {unit} ({sign}{round(change, digits)})"


def _flag_changes(base: Plan, head: Plan) -> str:
    old, new = _args(base), _args(head)
    changes = []
    for flag in sorted(set(old) | set(new)):
        if old.get(flag) != new.get(flag):
            before = "unset" if flag not in old else (old[flag] or "on")
            after = "unset" if flag not in new else (new[flag] or "on")
            changes.append(f"`{flag}` {before} -> {after}")
    return ", ".join(changes)


def compare(base: Mapping[str, Plan], head: Mapping[str, Plan]) -> str:
    """What changes between two sets of plans, per service, as Markdown; "no change" when nothing does."""
    lines = ["### llmkube plan: changes against the base branch", ""]
    for name in sorted(set(base) | set(head)):
        if name not in head:
            lines.append(f"- **{name}**: removed")
            continue
        if name not in base:
            lines.append(f"- **{name}**: added: {_row(name, head[name]).strip('| ')}")
            continue
        old, new = base[name], head[name]
        details = []
        if _fits(old) != _fits(new):
            details.append("fits -> **does not fit**" if _fits(old) else "does not fit -> fits")
        if not _fits(new):
            details.append("; ".join(new["problems"]))
        else:
            if old.get("placement") != new.get("placement"):
                details.append(f"placement: {old.get('placement')} -> {new.get('placement')}")
            flags = _flag_changes(old, new)
            if flags:
                details.append(f"flags: {flags}")
            old_dev, new_dev = _devices(old), _devices(new)
            for device in sorted(set(old_dev) | set(new_dev)):
                if old_dev.get(device) != new_dev.get(device):
                    label = "host RAM" if device == HOST else f"VRAM {device}"
                    details.append(f"{label}: {_delta(old_dev.get(device), new_dev.get(device), 'GiB', GIB)}")
            if old.get("hostMemoryRequest") != new.get("hostMemoryRequest"):
                details.append(f"memory request: {old.get('hostMemoryRequest')} -> {new.get('hostMemoryRequest')}")
            if old.get("decodeTokensPerSecond") != new.get("decodeTokensPerSecond"):
                details.append(
                    "decode: " + _delta(old.get("decodeTokensPerSecond"), new.get("decodeTokensPerSecond"), "tok/s")
                )
        lines.append(f"- **{name}**: " + ("; ".join(details) if details else "no change"))
    return "\n".join([*lines, ""])
