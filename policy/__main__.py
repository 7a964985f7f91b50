"""The llmkube policy pack: the rules an organisation enforces on every pull request's `pulumi preview`.

Each rule is one policy with a default enforcement level (``--policy-pack-config`` changes it, and sets the
rules' own settings). Rules read the properties our components register (an InferenceService's validated,
effective ``spec``, its ``model``, ``plan`` and ``path``; a Model's ``spec`` and ``path``), and, for pod security
and exposure, the Kubernetes objects of the whole stack, whoever made them. Every message names the service or
model, the config or argument path, and the fix.
"""

from __future__ import annotations

from llmkube_components.policies import policy_pack

policy_pack()
