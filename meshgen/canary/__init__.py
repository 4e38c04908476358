"""Canary releases through Git: every step a pull request, gated on Prometheus.

meshgen.canary.prometheus reads Prometheus's query API; meshgen.canary.gates turns a blueprint's
gates into PromQL for each mesh and a step's metrics into a verdict (pass, fail, inconclusive).
"""
