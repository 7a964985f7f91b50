"""Run the real llama-server (built by tools/setup-llama-server) on arguments our builder renders.

    server = find_server()                       # $LLAMA_SERVER, else the tools/setup-llama-server cache
    args = localize(rendered, model_file, port)  # --model, --port and --host pointed at this machine
    with LlamaServer(server, args, log_path) as srv:
        srv.post("/v1/chat/completions", {...})

The server runs as a child process in its own session, its stdout and stderr in a log file; it is killed
when the ``with`` block ends, however it ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Keep in sync with tools/setup-llama-server.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SETUP_SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "setup-llama-server"
# What tools/setup-llama-server builds into its bin directory (ggml-rpc-server is llama.cpp's RPC worker,
# tools/rpc, which older trees called rpc-server).
TOOLS = ("llama-server", "llama-bench", "ggml-rpc-server", "llama-fit-params")

# What llama-server prints when it does not accept an argument (common/arg.cpp), or accepts it with a warning.
REJECTED = re.compile(r"invalid argument|unknown argument|deprecated|expected value for argument|unknown value for",
                      re.IGNORECASE)  # fmt: skip
# Lines that match REJECTED but only say how to switch something, whatever the arguments: with --no-ui the server
# logs "The UI is disabled" and then "Use --ui/--no-ui (or deprecated --webui/--no-webui) to enable/disable".
NOT_REJECTED = re.compile(r"Use --ui/--no-ui \(or deprecated --webui/--no-webui\)")


def cached_bin_dir() -> Path:
    root = Path(os.environ.get("LLMKUBE_CACHE_DIR") or Path.home() / ".cache" / "llmkube")
    return root / "tools" / f"llama-server-llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}" / "bin"


def cached_server_path() -> Path:
    return cached_bin_dir() / "llama-server"


def tool_env(name: str) -> str:
    """The environment variable that overrides a tool's path: LLAMA_SERVER, LLAMA_BENCH, GGML_RPC_SERVER, ..."""
    return name.upper().replace("-", "_")


def find_tool(name: str) -> Path | None:
    """A llama.cpp tool (one of TOOLS): $<NAME> if set (it must exist then), else the cached build, else None."""
    given = os.environ.get(tool_env(name))
    if given:
        return Path(given)
    path = cached_bin_dir() / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def find_server() -> Path | None:
    """$LLAMA_SERVER if set (it must exist then), else the cached build, else None."""
    return find_tool("llama-server")


def require_tool(name: str) -> Path:
    """A llama.cpp tool (one of TOOLS) for an end-to-end module: a failure in CI when it is missing, a skip
    saying why elsewhere."""
    from tests.e2e.required import required

    if name not in TOOLS:
        raise ValueError(f"{name!r} is not one of the tools {SETUP_SCRIPT.name} builds: {', '.join(TOOLS)}")
    found = find_tool(name)
    env = tool_env(name)
    return required(
        found if found is not None and found.is_file() else None,
        f"{name} not found ({env}={os.environ.get(env)!r}, cache {cached_bin_dir() / name}); "
        f"build it with {SETUP_SCRIPT.relative_to(SETUP_SCRIPT.parents[1])}",
    )


def require_server() -> Path:
    """The server for an end-to-end module: a failure in CI when it is missing, a skip saying why elsewhere."""
    return require_tool("llama-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def localize(args: Sequence[str], model: str | os.PathLike[str], port: int) -> list[str]:
    """The rendered args with --model, --port and --host replaced; each must be there exactly once."""
    out = list(args)
    for flag, value in (("--model", str(model)), ("--port", str(port)), ("--host", "127.0.0.1")):
        positions = [i for i, arg in enumerate(out) if arg == flag]
        assert len(positions) == 1, f"{flag} appears {len(positions)} times in {args}"
        out[positions[0] + 1] = value
    return out


class ServerFailed(AssertionError):
    pass


def read_only_root(root: Path) -> list[str]:
    """A command prefix that runs a program with every file system read-only, as a container with
    readOnlyRootFilesystem and no writable volume: a user and mount namespace (util-linux unshare, no root
    needed) in which ``root``, an empty folder, becomes a read-only recursive bind of / to chroot into. The
    network is the host's, so the server still answers on loopback."""
    script = 'mount --rbind / "$0" && mount -o remount,bind,ro "$0" && exec chroot "$0" "$@"'
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(root)]


class LlamaServer:
    def __init__(
        self,
        binary: str | os.PathLike[str],
        args: Sequence[str],
        log_path: Path,
        *,
        timeout: float = 60,
        prefix: Sequence[str] = (),
    ):
        self.binary = Path(binary)
        self.prefix = list(prefix)  # e.g. read_only_root(...)
        self.args = list(args)
        self.log_path = log_path
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = int(self.args[self.args.index("--port") + 1])
        self.startup_seconds = 0.0

    # --- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, str(self.binary), *self.args], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"llama-server exited with {self.proc.returncode} before /health was 200\n"
                                   f"args: {self.args}\n{self.log_tail()}")  # fmt: skip
            try:
                status, _ = self.get("/health", timeout=2)
                if status == 200:
                    return
                last = f"status {status}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise ServerFailed(f"/health not 200 after {self.timeout} s ({last})\nargs: {self.args}\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and nothing else
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    # --- HTTP -------------------------------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, body: Any = None, timeout: float = 60, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def get(self, path: str, timeout: float = 60, headers: dict[str, str] | None = None) -> tuple[int, str]:
        return self._request("GET", path, timeout=timeout, headers=headers)

    def post(self, path: str, body: Any, timeout: float = 60, headers: dict[str, str] | None = None) -> tuple[int, str]:
        return self._request("POST", path, body, timeout=timeout, headers=headers)

    # --- the log ----------------------------------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "log tail:\n" + "\n".join(self.log().splitlines()[-lines:])

    def rejected_lines(self) -> list[str]:
        return [line for line in self.log().splitlines() if REJECTED.search(line) and not NOT_REJECTED.search(line)]


# `D tensor blk.0.ffn_up_exps.weight (0 MiB f16) buffer type overridden to CPU` (llama-model-loader.cpp, at
# debug level: -lv 5). The target is a host buffer type: CPU, or one of its extra types (CPU_REPACK, AMX).
OVERRIDDEN = re.compile(r"tensor (\S+) \(\d+ MiB \w+\) buffer type overridden to (\S+)")
# `llama_kv_cache: size =    1.06 MiB (  4096 cells,   2 layers,  4/1 seqs), K (q8_0):    0.53 MiB, V (q8_0): ...`
KV_CACHE = re.compile(r"llama_kv_cache: size = .*K \((\w+)\):.*V \((\w+)\):")
# `llama_kv_cache:        CPU KV buffer size =     1.06 MiB`
KV_BUFFER = re.compile(r"llama_kv_cache:\s+(\S+) KV buffer size")


def overridden_tensors(log: str) -> dict[str, str]:
    """Tensor name -> buffer type, for each tensor an override rule (-ot, --cpu-moe, --n-cpu-moe) placed."""
    return {m[1]: m[2] for m in OVERRIDDEN.finditer(log)}


def kv_cache_types(log: str) -> list[tuple[str, str]]:
    return [(m[1], m[2]) for m in KV_CACHE.finditer(log)]


def kv_buffers(log: str) -> list[str]:
    return KV_BUFFER.findall(log)
