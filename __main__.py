"""llmkube: one stack per environment. The stack file (stacks/Pulumi.<stack>.yaml) says what to deploy."""

from llmkube_components.program import main

platform = main()
