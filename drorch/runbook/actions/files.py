"""`files.restore`: put configuration back from a `files` source's backup (a
cut-over that failed is rolled back with the configuration it started from)."""

from __future__ import annotations

from pydantic import Field

from drorch.policy.models import Model
from drorch.policy.types import Name
from drorch.runbook.actions.base import Action, Manual, Outcome


class FilesRestoreArgs(Model):
    source: Name = Field(description="a `files` source of the policy")
    target: str = Field("/", description="where each backed-up /P lands as TARGET/P (/ puts files back in place)")
    include: list[str] = Field(default_factory=list, description="only these paths (globs)")
    backup: str | None = Field(None, description="this backup label (default: see before_run)")
    before_run: bool = Field(True, description="the newest backup finished before this run started (the "
                                               "configuration as it was before the cut-over); false: the latest")


class FilesRestore(Action):
    name = "files.restore"
    title = "restore configuration files"
    Args = FilesRestoreArgs
    uses_host = True

    def describe(self, args: FilesRestoreArgs, view) -> list[Manual]:
        which = f"--backup {args.backup}" if args.backup else \
            "--time <when the run started>" if args.before_run else ""
        include = "".join(f" --include '{glob}'" for glob in args.include)
        host = "" if view.step_host == "local" else f" --target-host {view.step_host}"
        return [Manual("on the orchestrator", "shell",
                       f"drorch restore --policy {view.policy_path} --source {args.source} {which} "
                       f"--target {args.target}{host}{include} --force".replace("  ", " "))]

    def run(self, args: FilesRestoreArgs, ctx) -> Outcome:
        from drorch.engine.restore import run_restore
        from drorch.engine.selection import choose_backup
        from drorch.factory import make_source, open_repository, repository_name
        from drorch.repo.catalog import Catalog
        from drorch.sources.base import RestoreOptions

        policy = ctx.policy
        repo = open_repository(policy, repository_name(policy, args.source, None))
        moment = ctx.started_at if args.before_run and not args.backup else None
        manifest = choose_backup(Catalog(repo), args.source, args.backup, moment)
        host_name = ctx.step_host if ctx.step_host_given else policy.sources[args.source].host
        options = RestoreOptions(target=ctx.expand(args.target), force=True, include=list(args.include))
        result = run_restore(repo, make_source(policy, args.source), manifest, options, ctx.host(host_name))
        return Outcome(True, f"restored {result.files} files of {args.source} backup {manifest.label} into "
                             f"{host_name}:{options.target}", {"backup": manifest.label, "files": result.files})
