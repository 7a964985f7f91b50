"""Fields of the LLMKube operator's API that llmkube leaves out on purpose, each with the reason.

Every other upstream field is modelled in ``model.py``, ``service.py`` and ``status.py``; a test compares both
with upstream's CRDs (tests/data/upstream) and fails on a field that is neither.
"""

from __future__ import annotations

from typing import Final

# kind -> upstream field path -> why llmkube does not model it.
UNSUPPORTED_FIELDS: Final[dict[str, dict[str, str]]] = {}
