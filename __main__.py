"""llmkube, run by Pulumi in two ways.

- As the stack program of this project (``pulumi up -s <stack>``): the stack file
  (stacks/Pulumi.<stack>.yaml) says what to deploy.
- As the component provider of this package (PulumiPlugin.yaml), which serves the components to programs in
  other languages: Pulumi starts it as a plugin, with no program runtime configured.
"""

from pulumi.runtime.settings import get_monitor

if get_monitor() is None:
    from llmkube_components.provider import serve

    serve()
else:
    from llmkube_components.program import main

    platform = main()
