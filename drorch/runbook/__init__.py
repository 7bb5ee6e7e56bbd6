"""Runbooks: one YAML that is both the document a person follows and the
program drorch runs (model.py), its Markdown (render.py), its actions
(actions/), and the runner with its journal, lease and approvals (runner.py)."""
