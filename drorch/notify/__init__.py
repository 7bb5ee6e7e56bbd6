"""Telling people what happened: notifications routed by severity (webhooks,
e-mail), de-duplicated and rate-limited; objectives and early warnings read
from the repositories; daily and incident reports (one model, Markdown and
JSON).  It sits beside the engine: cli, daemon and runbook call it; it reads
results and repositories, and never runs a job."""
