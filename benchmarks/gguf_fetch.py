"""What reading GGUF metadata costs: a 20 GB model over HTTP ranges, cold and warm, and cached planning reads.

A local server (testkit.gguf_files.ModelServer: Range, ETag, a 302 like Hugging Face's resolve/ URLs) serves
sparse 20 GB GGUF files whose headers are real: one shaped like Qwen3-30B-A3B (151936 tokens, 579 tensors)
and one with the 248320-token vocabulary of Qwen3.5/3.6, whose header is larger. Prints requests, bytes and
seconds; asserts nothing.

    .venv/bin/python -m benchmarks.gguf_fetch [--reads 100] [--size-gb 20]   (from the repository root)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from llmkube_components.planner.gguf import parse_header
from llmkube_components.planner.metadata import read_metadata
from testkit.gguf_files import ModelServer, write_sparse_large

MiB = 1024 * 1024
CASES: dict[str, dict[str, Any]] = {
    "qwen3-30b-a3b-like": {},
    "qwen3.6-vocab-like": {"vocab": 248320},
}


def header_size(path: Path) -> int:
    with open(path, "rb") as f:

        def read(offset: int, length: int) -> bytes:
            f.seek(offset)
            return f.read(length)

        return parse_header(read)[2]


def measure(server: ModelServer, label: str, source: str | Path, **kwargs: Any) -> None:
    """Read once; print the requests and body bytes the server saw, and the seconds it took."""
    server.reset()
    started = time.perf_counter()
    read_metadata(source, **kwargs)
    seconds = time.perf_counter() - started
    server.settle()
    print(f"  {label:<50} {len(server.requests):>8} {server.bytes_sent / MiB:8.2f} {seconds * 1000:10.1f}")


def fetch_costs(server: ModelServer, root: Path, name: str, dims: dict[str, Any], size: int) -> str:
    started = time.perf_counter()
    path = write_sparse_large(root / f"{name}.gguf", size, **dims)
    written = time.perf_counter() - started
    server.serve(path, f"cdn/{name}.gguf")
    server.redirects[f"resolve/main/{name}.gguf"] = f"cdn/{name}.gguf"
    url = server.url(f"resolve/main/{name}.gguf")
    print(
        f"\n{name}: {path.stat().st_size / 1e9:.1f} GB apparent, header {header_size(path) / MiB:.2f} MiB "
        f"(file written in {written:.1f} s)"
    )
    print(f"  {'read':<50} {'requests':>8} {'MiB sent':>8} {'ms':>10}")
    cache = root / f"cache-{name}"
    measure(server, "cold (302 to the CDN path, then ranges there)", url, cache_dir=cache)
    measure(server, "warm (cache entry trusted)", url, cache_dir=cache)
    measure(server, "revalidated, unchanged (If-None-Match -> 304)", url, cache_dir=cache, revalidate=True)
    server.ignore_range = True
    measure(server, "cold, server ignores Range (200, closed early)", url, cache_dir=root / f"cache-{name}-200")
    server.ignore_range = False
    measure(server, "cold, local file", path, cache_dir=root / f"cache-{name}-local")
    return url


def planning_costs(server: ModelServer, root: Path, url: str, local: Path, reads: int) -> None:
    print(f"\nplanning cost: {reads} cached reads (a model per service, every preview)")
    for label, source, cache in (
        ("URL (cache entry trusted)", url, root / "cache-planning-url"),
        ("local file (stat, then the cache entry)", local, root / "cache-planning-local"),
    ):
        read_metadata(source, cache_dir=cache)  # fill the cache
        server.reset()
        started = time.perf_counter()
        for _ in range(reads):
            read_metadata(source, cache_dir=cache)
        seconds = time.perf_counter() - started
        print(
            f"  {label:<42} {seconds * 1000:8.1f} ms total, {seconds / reads * 1000:6.2f} ms per read, "
            f"{len(server.requests)} requests"
        )
    n = max(1, reads // 10)
    started = time.perf_counter()
    for _ in range(n):
        header_size(local)
    seconds = time.perf_counter() - started
    print(f"  {'uncached: parse the local header':<42} {seconds / n * 1000:8.1f} ms per parse ({n} parses)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=100, help="cached reads for the planning-cost figures")
    parser.add_argument("--size-gb", type=float, default=20.0, help="apparent size of each sparse model file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = ModelServer(root / "www")
        try:
            urls = {
                name: fetch_costs(server, root, name, dims, int(args.size_gb * 1e9)) for name, dims in CASES.items()
            }
            first = next(iter(CASES))
            planning_costs(server, root, urls[first], root / f"{first}.gguf", args.reads)
        finally:
            server.close()


if __name__ == "__main__":
    main()
