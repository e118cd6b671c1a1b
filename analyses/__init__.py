"""Probes that read a `HookedMLP` through its hooks and weights.

Each analysis is a plain function over a model (or its cache) that returns a small result object
which serialises to JSON. Imports go `analyses -> hooked_mlp`, never back (the `hooked-mlp`
command line, a thin layer over both, is the one place that reaches into `analyses`).
"""
