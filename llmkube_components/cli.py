"""``llmkube``: the command line. Checks a stack file without Pulumi, lists profiles, keeps the README current."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .docs import update_readme
from .errors import CONFIG_NAMESPACE, ConfigError
from .hardware import builtin_profiles
from .resolve import load_stack


def _stack_file_config(path: Path) -> dict[str, Any]:
    config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    prefix = f"{CONFIG_NAMESPACE}:"
    return {key.removeprefix(prefix): value for key, value in config.items() if key.startswith(prefix)}


def cmd_check(args: argparse.Namespace) -> int:
    """Validate stack files the way ``pulumi preview`` would, without the engine: errors, then warnings."""
    status = 0
    for path in args.stack_files:
        try:
            stack = load_stack(_stack_file_config(Path(path)))
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


def cmd_profiles(args: argparse.Namespace) -> int:
    for name, profile in sorted(builtin_profiles().items()):
        gpu = f"{profile.gpu.count} x {profile.gpu.product} ({profile.gpu.memory})" if profile.gpu else "no GPU"
        print(f"{name:16} {gpu:45} RAM {profile.host_memory:6} {profile.description}")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
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
    profiles = sub.add_parser("profiles", help="list the built-in hardware profiles")
    profiles.set_defaults(func=cmd_profiles)
    docs = sub.add_parser("docs", help="regenerate the README's config reference from the API models")
    docs.add_argument("--readme", default="README.md")
    docs.add_argument("--check", action="store_true", help="fail if the README is out of date")
    docs.set_defaults(func=cmd_docs)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
