"""Helpers shared by the tests and the benchmarks: generated GGUF files, a real llama-server, the planner
accuracy matrix. Importable from the repository root (pytest puts it on the path; run benchmarks with
``python -m benchmarks.<name>``)."""
