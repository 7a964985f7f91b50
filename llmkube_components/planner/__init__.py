"""Plan-time fit planner: GGUF metadata -> memory plan per device -> placement decision -> throughput estimate."""
