"""llama-server's arguments for a service: the flag table rendered in order, then extraArgs, then --metrics.

The table and what each row means live in ``flags``; this builder only renders it. It expects a checked
spec (``checks`` reports a layerSplit that cannot be used and --port in extraArgs before any builder runs).
"""

from __future__ import annotations

from .api.model import ModelSpec
from .api.service import InferenceServiceSpec
from .flags import FLAG_TABLE, Inputs, extra_args, flags_in, given_by_user, metrics_once


def build_args(
    spec: InferenceServiceSpec,
    model: ModelSpec,
    model_path: str,
    gpu_count: int,
    *,
    draft_path: str | None = None,
    mmproj_path: str | None = None,
    router_preset_path: str | None = None,
    rpc_servers: tuple[str, ...] = (),
) -> list[str]:
    """llama-server's arguments: the table's flags in order, then extraArgs, then --metrics once.

    ``spec`` and ``model`` are the effective specs, ``gpu_count`` the GPUs the pod gets (with multiNode, every
    device the server splits the model over: its workers' and its own); ``draft_path`` and ``mmproj_path`` are
    where the pod finds the draft model and the multimodal projector, when there are any; ``router_preset_path``
    where runtime llamacpp-router finds its models preset (default flags.ROUTER_PRESET_FILE); ``rpc_servers`` the
    addresses of a multi-node service's workers (host:port), in rank order.
    """
    given = Inputs(spec, model, model_path, gpu_count, draft_path, mmproj_path, router_preset_path, rpc_servers)
    extra = extra_args(spec)
    user_flags = flags_in(extra)
    args: list[str] = []
    for row in FLAG_TABLE:
        if not given_by_user(row, user_flags):
            args += row.render(row.value(given))
    return [*args, *extra, *metrics_once(user_flags)]
