"""GGUF metadata: the parser agrees with the gguf package, remote reads stay cheap, failures are clear."""

from __future__ import annotations

import itertools
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFEndian, GGUFReader, GGUFValueType, GGUFWriter

from llmkube_components.planner import gguf
from llmkube_components.planner import metadata as reader
from llmkube_components.planner.gguf import MetadataError, parse_header
from llmkube_components.planner.metadata import read_metadata
from llmkube_components.planner.reader import MetadataReader
from llmkube_components.settings import Settings
from llmkube_components.sources import parse_source
from testkit.gguf_files import (
    ModelServer,
    write_dense,
    write_hybrid,
    write_model,
    write_moe,
    write_sliding_window,
    write_sparse_large,
)
from testkit.gguf_files import dense_model as dense_model_file

MiB = 1024 * 1024

MODELS = {
    "dense-f32": lambda p: write_dense(p),
    "dense-f16": lambda p: write_dense(p, weight_type="F16", n_layer=3),
    "dense-q8_0": lambda p: write_dense(p, weight_type="Q8_0"),
    "moe-q4_0": lambda p: write_moe(p, weight_type="Q4_0", n_expert=16, n_expert_used=4),
    "moe-shared-expert": lambda p: write_moe(p, shared_expert=True, n_embd=128, weight_type="Q8_0"),
    "hybrid": lambda p: write_hybrid(p, n_layer=8, full_attention_interval=4, weight_type="Q8_0"),
    "sliding-window": lambda p: write_sliding_window(p, n_layer=6, sliding_window=128, sliding_window_pattern=3),
    "sliding-window-per-layer": lambda p: write_sliding_window(p, n_layer=4, sliding_window_pattern=[1, 1, 1, 0]),
    "long-vocab": lambda p: write_dense(p, vocab=5000),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: write(root / f"{name}.gguf") for name, write in MODELS.items()}


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen3-30B-A3B-shaped file: a real 5 MB header, then 20 GB of hole."""
    return write_sparse_large(tmp_path_factory.mktemp("large") / "large.gguf", 20 * 10**9)


def local_read(path: Path) -> tuple[dict[str, Any], tuple[Any, ...], int]:
    with open(path, "rb") as f:

        def read(offset: int, length: int) -> bytes:
            f.seek(offset)
            return f.read(length)

        return parse_header(read)


# ---------------------------------------------------------------------------------------------------------
# The parser against the gguf package
# ---------------------------------------------------------------------------------------------------------


def expected_value(field: Any) -> Any:
    """What parse_header keeps of a GGUFReader field: the value, or a long array's length."""
    main = field.types[0]
    if main == GGUFValueType.ARRAY:
        n = len(field.data)
        numeric = field.types[-1] not in (GGUFValueType.STRING, GGUFValueType.ARRAY)
        if n > gguf.LONG_ARRAY and not (numeric and n <= gguf.LONG_NUMERIC_ARRAY):
            return n
    value = field.contents()
    if main == GGUFValueType.BOOL:
        return bool(value)
    return value


@pytest.mark.parametrize("name", MODELS)
def test_parse_matches_gguf_reader(models: dict[str, Path], name: str) -> None:
    fields, tensors, header_end = local_read(models[name])
    r = GGUFReader(models[name])
    expected = {k: expected_value(f) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert fields == expected
    assert [(t.name, t.type, t.shape) for t in tensors] == [
        (t.name, t.tensor_type.name, tuple(int(d) for d in t.shape)) for t in r.tensors
    ]
    assert header_end <= r.data_offset < header_end + 32


def test_long_arrays_are_kept_as_their_length(models: dict[str, Path]) -> None:
    fields, _, _ = local_read(models["long-vocab"])
    assert fields["tokenizer.ggml.tokens"] == 5000
    assert fields["tokenizer.ggml.token_type"] == 5000
    assert fields["tokenizer.ggml.merges"] == 5000 - 256 - 3
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert "<|im_start|>" in fields["tokenizer.chat_template"]

    hybrid, _, _ = local_read(models["hybrid"])
    assert hybrid["qwen35moe.rope.dimension_sections"] == [4, 2, 2, 0]
    per_layer, _, _ = local_read(models["sliding-window-per-layer"])
    assert per_layer["gemma3.attention.sliding_window_pattern"] == [True, True, True, False]


def test_reads_in_doubling_chunks_without_overlap(models: dict[str, Path]) -> None:
    calls: list[tuple[int, int]] = []
    with open(models["long-vocab"], "rb") as f:

        def read(offset: int, length: int) -> bytes:
            calls.append((offset, length))
            f.seek(offset)
            return f.read(length)

        _, _, header_end = parse_header(read, first_chunk=4096)
    assert [n for _, n in calls] == [4096 * 2 ** max(0, i - 1) for i in range(len(calls))]
    assert all(a + n <= b for (a, n), (b, _) in itertools.pairwise(calls))
    assert calls[-1][0] < header_end <= calls[-1][0] + calls[-1][1]


def test_big_endian_file_reads_the_same(tmp_path: Path, models: dict[str, Path]) -> None:
    model = dense_model_file()
    path = tmp_path / "be.gguf"
    w = GGUFWriter(path, model.arch, endianess=GGUFEndian.BIG)
    for key, value in model.kv.items():
        w.add_key_value(key, value, _gguf_type(value))
    for name, shape, _ in model.tensors:
        w.add_tensor(name, np.zeros(tuple(reversed(shape)), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert local_read(path)[:2] == local_read(models["dense-f32"])[:2]


def _gguf_type(value: Any) -> GGUFValueType:
    if isinstance(value, bool):
        return GGUFValueType.BOOL
    if isinstance(value, int):
        return GGUFValueType.UINT32
    if isinstance(value, float):
        return GGUFValueType.FLOAT32
    return GGUFValueType.STRING if isinstance(value, str) else GGUFValueType.ARRAY


# ---------------------------------------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------------------------------------


def _cut(src: Path, dst: Path, n: int) -> Path:
    dst.write_bytes(src.read_bytes()[:n])
    return dst


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a GGUF file: it has only 0 bytes"),
        (b"PK\x03\x04 a zip", "not a GGUF file: it does not start with the GGUF magic"),  # its bytes never echoed
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "a Git LFS pointer, not the file"),
        (b"<!DOCTYPE html><html>Sign in</html>", "an HTML page"),
        (b"GGUF" + struct.pack("<I", 1) + bytes(16), "GGUF version 1 is not supported"),
        (b"GGUF" + struct.pack("<I", 7) + bytes(16), "unsupported GGUF version 7"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 3) + b"key" + struct.pack("<I", 99), "type 99"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62), "implausible string length"),
        (b"GGUF" + struct.pack("<IQQ", 3, 2**62, 0), "implausible tensor count"),
    ],
)
def test_not_a_gguf_header(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(MetadataError, match="^" + str(path) + ": ") as err:
        read_metadata(path, cache_dir=tmp_path)
    assert message in err.value.message


def test_truncated_header_and_truncated_data(tmp_path: Path, models: dict[str, Path]) -> None:
    src = models["moe-q4_0"]
    _, _, header_end = local_read(src)
    with pytest.raises(MetadataError, match=r"truncated: the file ends at byte \d+, inside the GGUF header"):
        read_metadata(_cut(src, tmp_path / "a.gguf", header_end - 10), cache_dir=tmp_path)
    size = src.stat().st_size
    with pytest.raises(MetadataError, match=rf"truncated: the file has {size - 100} bytes but its tensor data ends"):
        read_metadata(_cut(src, tmp_path / "b.gguf", size - 100), cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/nonexistent/model.gguf", "/nonexistent/model.gguf: no such file"),
        ("pvc://models/qwen.gguf", "pvc://models/qwen.gguf: a pvc:// model lives on a claim"),
        ("s3://bucket/qwen.gguf", "s3://bucket/qwen.gguf: an s3:// model is read with credentials only its"),
        ("hf://Qwen/Qwen3-8B-GGUF", "hf://Qwen/Qwen3-8B-GGUF: names no file: a repository's model file is the first"),
    ],
)
def test_sources_that_cannot_be_read(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(MetadataError) as err:
        read_metadata(source, cache_dir=tmp_path)
    assert str(err.value).startswith(message)


def test_hf_sources_map_like_the_downloader() -> None:
    # The planner must read the very file the init container downloads.
    assert reader._locate("hf://Qwen/Qwen3-8B-GGUF@abc123/q4.gguf").url == (
        "https://huggingface.co/Qwen/Qwen3-8B-GGUF/resolve/abc123/q4.gguf"
    )
    assert reader._locate("hf://Qwen/Qwen3-8B-GGUF/sub/q4.gguf").url == (
        "https://huggingface.co/Qwen/Qwen3-8B-GGUF/resolve/main/sub/q4.gguf"
    )
    # A file:// path as written, as the operator and the Deployment's hostPath take it: the file the pod reads.
    assert reader._locate("file:///models/my%20model.gguf").path == "/models/my%20model.gguf"


# ---------------------------------------------------------------------------------------------------------
# Local files: the cache checks size and modification time
# ---------------------------------------------------------------------------------------------------------


def test_local_cache_follows_the_file(tmp_path: Path) -> None:
    # The settings' cache dir (LLMKUBE_CACHE_DIR at the edge) reaches the reader.
    read = MetadataReader.from_settings(Settings.from_env({"LLMKUBE_CACHE_DIR": str(tmp_path / "cache")}))
    path = write_dense(tmp_path / "m.gguf", n_layer=2)
    source = parse_source(str(path))
    first = read(source)
    assert first.arch("block_count") == 2
    assert len(list((tmp_path / "cache" / "gguf").glob("*.json"))) == 1
    assert read(source) == first
    write_dense(path, n_layer=5)
    assert read(source).arch("block_count") == 5


# ---------------------------------------------------------------------------------------------------------
# A local HTTP server with Range, ETag, redirects and misbehaviours on demand
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModelServer]:
    s = ModelServer(tmp_path / "www")
    yield s
    s.close()


def test_large_remote_file_takes_few_small_requests(server: ModelServer, large: Path, tmp_path: Path) -> None:
    url = server.serve(large)
    lines: list[str] = []
    started = time.monotonic()
    meta = read_metadata(url, cache_dir=tmp_path, progress=lines.append)
    seconds = time.monotonic() - started
    assert len(server.requests) <= 4
    assert server.bytes_sent <= 8 * MiB
    assert server.statuses == [206] * len(server.requests)
    assert seconds < 5
    assert meta.architecture == "qwen3moe"
    assert len(meta.tensors) == 579
    assert meta.fields["tokenizer.ggml.tokens"] == 151936
    local = read_metadata(large, cache_dir=tmp_path / "local")
    assert (meta.fields, meta.tensors, meta.files, meta.notes) == (local.fields, local.tensors, 1, ())
    assert any("request(s)" in line for line in lines)

    # A second read of the same URL asks nothing.
    server.reset()
    lines.clear()
    assert read_metadata(url, cache_dir=tmp_path, progress=lines.append) == meta
    assert server.requests == []
    assert lines == [f"{url}: GGUF metadata from the cache"]


def test_redirect_is_followed_and_later_ranges_go_to_its_target(
    server: ModelServer, large: Path, tmp_path: Path
) -> None:
    server.serve(large, "cdn/large.gguf")
    server.redirects["resolve/main/large.gguf"] = "cdn/large.gguf"
    meta = read_metadata(server.url("resolve/main/large.gguf"), cache_dir=tmp_path)
    assert len(meta.tensors) == 579
    paths = [p for p, _ in server.requests]
    assert paths[:2] == ["resolve/main/large.gguf", "cdn/large.gguf"]
    assert paths[2:] == ["cdn/large.gguf"] * (len(paths) - 2)  # no second detour through the redirect
    assert 2 < len(paths) <= 5


def test_revalidation_asks_once_and_picks_up_a_change(
    server: ModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.serve(write_moe(tmp_path / "m.gguf", n_layer=2))
    assert read_metadata(url, cache_dir=tmp_path).arch("block_count") == 2

    # Unchanged: one conditional request, answered 304 without a body.
    server.reset()
    assert read_metadata(url, cache_dir=tmp_path, revalidate=True).arch("block_count") == 2
    assert server.statuses == [304]
    assert server.bytes_sent == 0

    # The file changes upstream: trusted from the cache until revalidation is asked for.
    time.sleep(0.01)
    write_moe(server.root / "m.gguf", n_layer=3)
    assert read_metadata(url, cache_dir=tmp_path).arch("block_count") == 2
    settings = Settings.from_env({"LLMKUBE_GGUF_REVALIDATE": "1", "LLMKUBE_CACHE_DIR": str(tmp_path)})
    assert MetadataReader.from_settings(settings)(parse_source(url)).arch("block_count") == 3
    server.reset()
    assert read_metadata(url, cache_dir=tmp_path).arch("block_count") == 3
    assert server.requests == []


def test_revalidation_without_conditional_requests_compares_the_etag(server: ModelServer, tmp_path: Path) -> None:
    server.conditional = False
    url = server.serve(write_dense(tmp_path / "m.gguf", vocab=20000))
    read_metadata(url, cache_dir=tmp_path, timeout=5)
    server.reset()
    read_metadata(url, cache_dir=tmp_path, revalidate=True)
    assert server.statuses == [206]  # the first range shows the same ETag: the rest is not fetched


def test_server_that_ignores_range(server: ModelServer, large: Path, tmp_path: Path) -> None:
    server.ignore_range = True
    url = server.serve(large)
    started = time.monotonic()
    meta = read_metadata(url, cache_dir=tmp_path)
    assert time.monotonic() - started < 5
    assert len(meta.tensors) == 579
    assert server.statuses == [200]
    assert server.bytes_sent < 64 * MiB  # the header and what the sockets buffered, not 20 GB
    assert meta.notes == (
        "large.gguf: the server ignored HTTP Range requests; the header was read from the start of the "
        "whole-file response, which was then closed",
    )


def test_http_error_names_the_status(server: ModelServer, tmp_path: Path) -> None:
    url = server.url("missing.gguf")
    with pytest.raises(MetadataError) as err:
        read_metadata(url, cache_dir=tmp_path)
    assert str(err.value) == (
        f"{url}: HTTP 404 Not Found from {url}: check the organisation, repository, revision and file name"
    )


def test_server_down_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(MetadataError, match=rf"cannot read from 127.0.0.1:{port}: .*refused"):
        read_metadata(f"http://127.0.0.1:{port}/m.gguf", cache_dir=tmp_path)
    assert time.monotonic() - started < 2


def test_server_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)  # accepts connections into the backlog, never answers
        url = f"http://127.0.0.1:{s.getsockname()[1]}/m.gguf"
        started = time.monotonic()
        with pytest.raises(MetadataError, match=r"no answer from 127.0.0.1:\d+ within 0.3 s \(timeout\)"):
            read_metadata(url, cache_dir=tmp_path, timeout=0.3)
        assert time.monotonic() - started < 2


def test_trickling_server_hits_the_total_deadline(server: ModelServer, tmp_path: Path) -> None:
    server.drip = True
    url = server.serve(write_dense(tmp_path / "m.gguf"))
    started = time.monotonic()
    with pytest.raises(MetadataError, match=r"did not arrive within 2.4 s \(12 x the timeout of 0.2 s\)"):
        read_metadata(url, cache_dir=tmp_path, timeout=0.2)
    assert time.monotonic() - started < 4


# ---------------------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------------------


def without_split_keys(fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if not k.startswith("split.")}


@pytest.mark.parametrize("parts", [2, 3])
def test_split_parts_are_found_by_name_and_merged(tmp_path: Path, parts: int) -> None:
    whole = read_metadata(write_hybrid(tmp_path / "whole.gguf"), cache_dir=tmp_path)
    first = write_hybrid(tmp_path / "split.gguf", parts=parts)
    assert first.name == f"split-00001-of-0000{parts}.gguf"
    meta = read_metadata(first, cache_dir=tmp_path)
    assert meta.files == parts
    assert meta.tensors == whole.tensors
    assert without_split_keys(meta.fields) == without_split_keys(whole.fields)
    assert meta.fields["split.count"] == parts


def test_split_over_http_is_cached_part_by_part(server: ModelServer, tmp_path: Path) -> None:
    first = write_moe(tmp_path / "moe.gguf", parts=3)
    for part in sorted(tmp_path.glob("moe-0000*-of-00003.gguf")):
        server.serve(part, f"repo/{part.name}")
    url = server.url(f"repo/{first.name}")
    meta = read_metadata(url, cache_dir=tmp_path)
    assert meta.files == 3
    assert sorted({p for p, _ in server.requests}) == [f"repo/moe-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    server.reset()
    assert read_metadata(url, cache_dir=tmp_path) == meta
    assert server.requests == []


def test_split_with_other_names_needs_the_files_list(tmp_path: Path) -> None:
    write_moe(tmp_path / "moe.gguf", parts=3)
    for i, name in enumerate(("first.gguf", "second.gguf", "third.gguf"), start=1):
        (tmp_path / f"moe-0000{i}-of-00003.gguf").rename(tmp_path / name)
    with pytest.raises(MetadataError, match=r"split\.count says the model has 3 files, but the name does not follow"):
        read_metadata(tmp_path / "first.gguf", cache_dir=tmp_path)
    meta = read_metadata(
        tmp_path / "first.gguf", files=["first.gguf", "third.gguf", "second.gguf", "NOTES.md"], cache_dir=tmp_path
    )
    assert meta.files == 3
    assert meta.tensors[0].name == "token_embd.weight"
    assert meta.notes == ("NOTES.md: not a .gguf file, not read for metadata",)

    with pytest.raises(MetadataError, match=r"says the model has 3 files, 2 were given \(first.gguf, second.gguf\)"):
        read_metadata(tmp_path / "first.gguf", files=["second.gguf"], cache_dir=tmp_path)
    (tmp_path / "third.gguf").unlink()
    with pytest.raises(MetadataError, match=r"third.gguf: no such file"):
        read_metadata(tmp_path / "first.gguf", files=["second.gguf", "third.gguf"], cache_dir=tmp_path)


def test_a_file_that_is_not_a_part_is_refused(tmp_path: Path) -> None:
    write_dense(tmp_path / "other.gguf")
    first = write_moe(tmp_path / "moe.gguf", parts=2)
    with pytest.raises(MetadataError, match=r"other\.gguf is not a part of the same split as moe-00001"):
        read_metadata(first, files=[(tmp_path / "moe-00002-of-00002.gguf").name, "other.gguf"], cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------------------


def test_import_uses_no_network_numpy_or_gguf() -> None:
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise AssertionError('network at import')\n"
        "socket.socket.connect = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "import llmkube_components.planner.metadata\n"
        "assert 'numpy' not in sys.modules and 'gguf' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_write_model_rejects_unknown_weight_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="weight_type must be one of"):
        write_model(tmp_path / "x.gguf", dense_model_file(), weight_type="Q4_K")
