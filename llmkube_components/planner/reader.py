"""How the planner reads model metadata in this run: the settings' network policy, timeout and cache.

Light on purpose: the reading itself (files, HTTP ranges, the cache; ``metadata``) and the GGUF format
(``gguf``) are imported when a file is first read, not by every preview that plans from the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..settings import Settings
from ..sources import ModelSource
from .types import GGUFMetadata


@dataclass(frozen=True)
class MetadataReader:
    """Reads a model's GGUF metadata (raises ``types.MetadataError``), as the settings allow."""

    offline: bool = False
    timeout: float = 10.0
    cache_dir: Path | None = None
    revalidate: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> MetadataReader:
        return cls(settings.offline, settings.metadata_timeout, settings.cache_dir, settings.revalidate)

    def can_read(self, source: ModelSource) -> bool:
        """Offline, only local files are read."""
        return source.local or not self.offline

    def __call__(self, source: ModelSource, files: Sequence[str] = ()) -> GGUFMetadata:
        from .metadata import read_metadata

        return read_metadata(
            source.text, files=files, cache_dir=self.cache_dir, timeout=self.timeout, revalidate=self.revalidate
        )
