"""Planner accuracy: the memory planner's figures against llama.cpp's own accounting, as a table.

The matrix and the measurement are in testkit/accuracy.py (its docstring says what is compared and how).
Prints figures; asserts nothing (tests/e2e/test_planner_accuracy.py asserts the targets on a subset).
Run from the repository root: .venv/bin/python -m benchmarks.planner_accuracy [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from testkit.accuracy import (
    CACHE_TYPES,
    CONTEXTS,
    QUANTITIES,
    TARGETS,
    Case,
    Row,
    all_cases,
    facts_of,
    format_table,
    measure,
    model_buffers,
    predicted,
    server_args,
    write_models,
)
from testkit.llama_server import LlamaServer, find_server, free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one context, parallel unset: 18 runs")
    parser.add_argument("--shape", action="append", help="only these shapes (repeatable)")
    ns = parser.parse_args()
    server = find_server()
    if server is None or not server.is_file():
        sys.exit("llama-server not found: run tools/setup-llama-server or set LLAMA_SERVER")
    cases = all_cases(ns.shape)
    if ns.quick:
        cases = [c for c in cases if c.context == CONTEXTS[0] and c.parallel is None]
    rows: list[Row] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="planner-accuracy-") as tmp:
        folder = Path(tmp)
        models = write_models(folder)
        for case in cases:
            rows += measure(server, models, case, folder)
        seconds = time.perf_counter() - start
        repack = []
        for shape in dict.fromkeys(c.shape for c in cases):
            case = Case(shape, CACHE_TYPES[0], CONTEXTS[0], None)
            with LlamaServer(server, server_args(models[shape], case, free_port(), repack=True),
                             folder / f"{shape}-repack.log") as srv:  # fmt: skip
                pass
            repack.append((shape, predicted(facts_of(models[shape]), case)["weights"], model_buffers(srv.log())))
    print(format_table(rows))
    print()
    print("Model buffers as the server runs by default (extra buffer types on, no --no-repack):")
    for shape, weights, buffers in repack:
        listed = ", ".join(f"{name} {mib:.2f}" for name, mib in buffers.items())
        print(f"  {shape:12} planner weights {weights:8.3f} MiB; llama.cpp: {listed} (sum {sum(buffers.values()):.2f})")
    print()
    print(f"{len(cases)} server runs in {seconds:.0f} s")
    for q in QUANTITIES:
        errs = [abs(r.error) for r in rows if r.quantity == q and r.reported]
        miss = [r for r in rows if r.quantity == q and not r.ok]
        if errs:
            print(
                f"{q:9} rows {len(errs):3}  max |error| {100 * max(errs):6.2f}%  "
                f"mean |error| {100 * sum(errs) / len(errs):6.2f}%  "
                f"over the {100 * TARGETS[q]:.0f}% target: {len(miss)}"
            )


if __name__ == "__main__":
    main()
