"""``llmkube``: the command line. Checks a stack file without Pulumi, lists profiles, keeps the README current."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from . import review, workloads
from .api.service import DEFAULT_MAX_GROUP_SIZE
from .docs import update_readme
from .errors import CONFIG_NAMESPACE, ConfigError
from .hardware import builtin_profiles
from .hardware.profile import ETHERNET_LINKS
from .pipeline import load
from .settings import Settings


def _stack_file_config(path: Path) -> dict[str, Any]:
    """The ``llmkube:`` keys of a stack file; ConfigError (one clean line) for a file that is not one."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError.at("", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError.at("", f"{path} is not YAML{where}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError.at("", f"{path}: a stack file is a mapping with a config: key, not a {_kind(document)}")
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError.at("", f"{path}: config: must be a mapping of keys to values, not a {_kind(config)}")
    prefix = f"{CONFIG_NAMESPACE}:"
    return {key.removeprefix(prefix): value for key, value in config.items() if str(key).startswith(prefix)}


def _kind(value: Any) -> str:
    names: dict[type, str] = {list: "list", str: "string"}
    return names.get(type(value), type(value).__name__)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Validate stack files the way ``pulumi preview`` would, without the engine: errors, then warnings."""
    status = 0
    for path in args.stack_files:
        try:
            stack = load(_stack_file_config(Path(path)), settings).stack
        except ConfigError as exc:
            print(f"{path}: invalid", file=sys.stderr)
            for problem in exc.problems:
                print(f"  error: {problem}", file=sys.stderr)
            status = 1
            continue
        for warning in stack.warnings:
            print(f"  warning: {warning}", file=sys.stderr)
        services = ", ".join(sorted(stack.services)) or "no services"
        print(f"{path}: ok ({stack.delivery}, profile {stack.profile.name}, {services})")
    return status


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give a token count of 0 or more")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count")
    return value


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    """Plan one service (from flags) or every service of a stack file, as tables or JSON."""
    settings = dataclasses.replace(settings, decode_depth=args.depth, prompt_tokens=args.prompt)
    if args.stack_file:
        try:
            raw = _stack_file_config(Path(args.stack_file))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        if not args.model:
            print("llmkube plan: give --model SOURCE|CATALOG-ENTRY, or --stack-file", file=sys.stderr)
            return 2
        model: dict[str, Any] = {"source": args.model}
        local = Path(args.model).exists()
        if local:
            model = {"source": str(Path(args.model).resolve())}
        elif "://" not in args.model:
            # A catalog entry name: plan it from the catalog only (no file to read), under a placeholder source.
            settings = dataclasses.replace(settings, offline=True)
            model = {"source": f"https://catalog.invalid/{args.model}.gguf", "catalog": args.model}
        if args.quantization:
            model["quantization"] = args.quantization
        service: dict[str, Any] = {"modelRef": "model", "contextSize": args.context}
        for key, value in (
            ("cacheTypeK", args.cache_type_k),
            ("cacheTypeV", args.cache_type_v),
            ("parallelSlots", args.parallel),
            ("moeCPUOffload", args.cpu_moe or None),
            ("moeCPULayers", args.n_cpu_moe),
            ("noKvOffload", args.no_kv_offload or None),
            ("hostMemory", None),
        ):
            if value is not None:
                service[key] = value
        hardware: Any = args.profile
        if args.nodes is not None:
            # A group of nodes of the profile: the stack counts them (the pool), the service may span them.
            largest = args.nodes if args.nodes != "auto" else (args.max_nodes or DEFAULT_MAX_GROUP_SIZE)
            hardware = {"extends": args.profile, "nodes": largest}
            service["multiNode"] = {"size": args.nodes, **({"maxSize": args.max_nodes} if args.max_nodes else {})}
        if args.link is not None:
            hardware = {
                **(hardware if isinstance(hardware, dict) else {"extends": hardware}),
                "network": {"link": args.link},
            }
        # A file on this machine is only read here, never mounted into a pod: no hostPath to consent to.
        raw = {
            "hardware": hardware,
            "allowHostPath": local,
            "models": {"model": model},
            "services": {"plan": service},
        }
    if sys.stderr.isatty():
        print("llmkube: reading model metadata (header only; cached after the first time)...", file=sys.stderr)
    base = None
    if args.compare:
        try:
            base = json.loads(Path(args.compare).read_text())
        except (OSError, ValueError) as exc:
            print(f"llmkube plan: --compare {args.compare}: not a plan --json file ({exc})", file=sys.stderr)
            return 2
    try:
        planned = load(raw, settings)
    except ConfigError as exc:
        if base is not None:
            # The head does not plan: every service the problems name does not fit, which is the change to show.
            print(review.compare(base, _failed(base, exc)))
            return 1
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    stack = planned.stack
    if not planned.plans:
        for warning in stack.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print("llmkube plan: no service could be planned", file=sys.stderr)
        return 1
    plans = {
        name: {**plan.output(), "serverArgs": workloads.server_args_for(planned.stack.services[name])}
        for name, plan in planned.plans.items()
    }
    if base is not None:
        print(review.compare(base, plans))
    elif args.json:
        print(json.dumps(plans, indent=2, sort_keys=True))
    elif args.markdown:
        print(review.markdown(plans))
    else:
        for plan in planned.plans.values():
            print(plan.table())
            print()
    for warning in stack.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _group_size(text: str) -> int | str:
    if text == "auto":
        return text
    return _positive(text)


def _failed(base: dict[str, Any], error: ConfigError) -> dict[str, Any]:
    """The head's side when it does not plan: each base service with the problems under its config path."""
    out: dict[str, Any] = {}
    for name in base:
        mine = [str(p) for p in error.problems if str(p.path).startswith(f"services.{name}")]
        out[name] = {"problems": mine} if mine else base[name]
    unplaced = [str(p) for p in error.problems if not any(str(p.path).startswith(f"services.{n}") for n in base)]
    if unplaced:
        out["(stack)"] = {"problems": unplaced}
    return out


def cmd_profiles(args: argparse.Namespace, settings: Settings) -> int:
    for name, profile in sorted(builtin_profiles().items()):
        gpu = f"{profile.gpu.count} x {profile.gpu.product} ({profile.gpu.memory})" if profile.gpu else "no GPU"
        print(f"{name:16} {gpu:45} RAM {profile.host_memory:6} {profile.description}")
    return 0


def cmd_docs(args: argparse.Namespace, settings: Settings) -> int:
    """Regenerate the README's config reference from the API models; --check only reports drift."""
    readme = Path(args.readme)
    text = readme.read_text()
    new = update_readme(text)
    if args.check:
        if new != text:
            print(f"{readme}: the config reference is out of date; run `llmkube docs`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmkube", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate stack files (stacks/Pulumi.<stack>.yaml) without Pulumi")
    check.add_argument("stack_files", nargs="+")
    check.set_defaults(func=cmd_check)
    plan = sub.add_parser(
        "plan",
        help="plan memory, placement and throughput for a model on a hardware profile (or a whole stack file)",
    )
    plan.add_argument("--stack-file", help="plan every service of stacks/Pulumi.<stack>.yaml instead")
    plan.add_argument("--profile", default="cpu-only", help="hardware profile (default cpu-only)")
    plan.add_argument("--model", help="model source (path, http(s)://, hf://) or catalog entry (e.g. Qwen3-30B-A3B)")
    plan.add_argument("--quantization", help="quantization label, e.g. Q4_K_M (catalog entries)")
    plan.add_argument("--context", type=int, default=8192, help="contextSize (default 8192)")
    plan.add_argument("--cache-type-k")
    plan.add_argument("--cache-type-v")
    plan.add_argument("--parallel", type=int)
    plan.add_argument("--cpu-moe", action="store_true", help="explicit --cpu-moe (default: the planner decides)")
    plan.add_argument("--n-cpu-moe", type=int)
    plan.add_argument("--no-kv-offload", action="store_true")
    plan.add_argument(
        "--depth",
        type=_count,
        default=0,
        help="tokens already in context for the decode figure (default 0, as llama-bench's tg128); the plan also "
        "shows decode at 1K and at the full context",
    )
    plan.add_argument(
        "--prompt", type=_positive, default=512, help="prompt length for prefill speed and time to first token (512)"
    )
    plan.add_argument(
        "--nodes",
        type=_group_size,
        help="serve the model from N nodes of the profile with llama.cpp RPC (multiNode size), or auto: every count "
        "up to --max-nodes",
    )
    plan.add_argument(
        "--max-nodes", type=_positive, help=f"with --nodes auto, the most nodes (default {DEFAULT_MAX_GROUP_SIZE})"
    )
    plan.add_argument("--link", choices=list(ETHERNET_LINKS), help="the nodes' network link (default 1GbE)")
    output = plan.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the plans as JSON (the input of --compare)")
    output.add_argument("--markdown", action="store_true", help="print the plans as a Markdown table")
    output.add_argument(
        "--compare", metavar="BASE.json", help="print what changed against a plan --json file, as Markdown"
    )
    plan.set_defaults(func=cmd_plan)
    profiles = sub.add_parser("profiles", help="list the built-in hardware profiles")
    profiles.set_defaults(func=cmd_profiles)
    docs = sub.add_parser("docs", help="regenerate the README's config reference from the API models")
    docs.add_argument("--readme", default="README.md")
    docs.add_argument("--check", action="store_true", help="fail if the README is out of date")
    docs.set_defaults(func=cmd_docs)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)  # the edge: nothing below it reads the environment
    except ValueError as exc:
        parser.error(str(exc))
    return int(args.func(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
