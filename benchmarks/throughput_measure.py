"""Prefill and decode speed of llama.cpp on this machine (CPU only): the raw measurements, as a table and JSON.

The models, the runs and what each row means are in testkit/throughput.py (its docstring). Prints figures;
asserts nothing. Run from the repository root, with the tools built (tools/setup-llama-server):

    .venv/bin/python -m benchmarks.throughput_measure [--json out.json] [--folder DIR] [--quick] [--weight-type Q8_0]

``--folder`` keeps the generated models (and server logs) between runs; ``--quick`` does one repetition and
depths 0 and 1024 only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from testkit.gguf_files import WEIGHT_TYPES
from testkit.llama_server import find_tool
from testkit.throughput import WEIGHT_TYPE, Measurement, format_table, measure_all


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the machine facts and rows here")
    parser.add_argument("--folder", type=Path, help="where the models and logs go (default: a temporary folder)")
    parser.add_argument("--threads", type=int, help="threads for llama.cpp (default: the physical cores)")
    parser.add_argument("--quick", action="store_true", help="one repetition, depths 0 and 1024")
    parser.add_argument("--weight-type", default=WEIGHT_TYPE, choices=WEIGHT_TYPES, help="of the models' matrices")
    ns = parser.parse_args()
    bench, server = find_tool("llama-bench"), find_tool("llama-server")
    if bench is None or server is None:
        sys.exit(
            "llama-bench or llama-server not found: run tools/setup-llama-server (or set LLAMA_BENCH and LLAMA_SERVER)"
        )
    depths, reps = ((0, 1024), 1) if ns.quick else ((0, 1024, 4096), 3)
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        folder = ns.folder or Path(tmp)
        result = measure_all(folder, bench=bench, server=server, threads=ns.threads, depths=depths, reps=reps,
                             weight_type=ns.weight_type)  # fmt: skip
    machine = result["machine"]
    print(
        f"machine: {machine['cpu_model']}, {machine['cpu_cores']} physical cores ({machine['logical_cpus']} CPUs), "
        f"memory bandwidth read {machine['host_memory_bandwidth'] / 1e9:.1f} GB/s, "
        f"copy {machine['copy_bandwidth'] / 1e9:.1f} GB/s ({machine['bandwidth_array_bytes'] >> 20} MiB arrays)"
    )
    print(f"load average before {result['load_average_before']}, after {result['load_average_after']}; "
          f"{result['seconds']:.0f} s")  # fmt: skip
    for name, model in result["models"].items():
        f = model["facts"]
        print(
            f"{name}: {f['architecture']}, {model['file_bytes'] / 1e6:.0f} MB file, {model['weight_type']}, "
            f"{f['active_weight_bytes_per_token'] / 1e6:.0f} MB of weights read per token, "
            f"KV {f['kv_bytes_per_token_f16']} B/token (f16); server buffers {model['server_model_buffers_mib']}"
        )
    print()
    print(format_table(Measurement(**row) for row in result["rows"]))
    if ns.json:
        ns.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
