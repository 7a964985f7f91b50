"""A Model's prefetch Job (delivery direct): fills the namespace's shared model cache before any service
starts, with the very init containers a service's pod runs (cache prep, the downloader with its lock, resume
and sha256 checks), so that the pods that start later find every file cached.

As the operator's (model_prefetch.go buildPrefetchJob): ``<model>-prefetch``, two retries, kept a day after it
finishes, a trivial main container once the init containers are done. Unlike the operator's, its pod runs
restricted like our others (a fixed non-root uid, fsGroup, RuntimeDefault seccomp), and it is built for every
downloaded source (s3:// and bare repository ids too, which the operator does not prefetch).
"""

from __future__ import annotations

from typing import Any, Final

from ..api.stack import SHARED_CACHE_PVC_NAME
from ..meta import object_meta, recommended_labels, restricted_container_security_context, sorted_by_key
from ..resolve import ResolvedModel
from .labels import LABEL_MODEL
from .podsecurity import pod_security_context
from .storage import DOWNLOADER_IMAGE, INIT_CONTAINER_RESOURCES, model_staging_pod

Manifest = dict[str, Any]

PREFETCH_SUFFIX: Final = "-prefetch"
PREFETCH_COMPONENT: Final = "model-prefetch"
PREFETCH_BACKOFF_LIMIT: Final = 2  # the operator's; each retry resumes what the last one downloaded
PREFETCH_TTL_SECONDS: Final = 86400  # the operator's: the finished Job (and its logs) stays a day


def prefetch_job_name(model: ResolvedModel) -> str:
    return model.name + PREFETCH_SUFFIX


def prefetch_job(model: ResolvedModel, namespace: str, *, downloader_image: str = DOWNLOADER_IMAGE) -> Manifest:
    """The batch/v1 Job that downloads ``model`` into the shared cache PVC (llmkube-model-cache).

    The PVC must exist (the stack's shared cache: register it whenever a model has prefetch). Only for a
    downloaded source in the shared cache mode: ``checks.prefetch_problems`` refuses the rest at preview.
    """
    storage = model_staging_pod(model.spec, SHARED_CACHE_PVC_NAME, downloader_image=downloader_image)
    labels = sorted_by_key(
        {**recommended_labels("llmkube", PREFETCH_COMPONENT, prefetch_job_name(model)), LABEL_MODEL: model.name}
    )
    done: Manifest = {
        "name": "prefetch-done",
        "image": downloader_image,
        "command": ["sh", "-c", f"echo 'llmkube: {model.name} is in the model cache'"],
        "resources": INIT_CONTAINER_RESOURCES,
        "securityContext": restricted_container_security_context(read_only_root_filesystem=True),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod: Manifest = {
        # Nothing in the Job talks to the API server.
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "initContainers": storage.init_containers,
        "containers": [done],
        "volumes": storage.volumes,
    }
    if model.spec.prefetch_tolerations:
        pod["tolerations"] = [t.wire() for t in model.spec.prefetch_tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(prefetch_job_name(model), namespace, labels),
        "spec": {
            "backoffLimit": PREFETCH_BACKOFF_LIMIT,
            "ttlSecondsAfterFinished": PREFETCH_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
