"""CDS Hooks 2.0 protocol models (`models`): requests, cards, suggestions, discovery, feedback.

Below both `hooks` (the HTTP service and pipeline) and `cards` / `feedback` (which build and read these
models), so neither needs to import `hooks`: the layering is stated in pyproject.toml (import-linter) and
checked by tests/test_import_layers.py.
"""
