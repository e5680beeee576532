"""Stages: one thin module per Hydra job kind, wiring the other packages to the run lifecycle.

A stage module imports from `synque.data`, `synque.embed`, `synque.proxies`, `synque.llm`,
`synque.lens`, `synque.train`, `synque.analysis` and `synque.tracking`; none of those
imports a stage, and stages talk to each other only through MLflow and the caches.
"""
