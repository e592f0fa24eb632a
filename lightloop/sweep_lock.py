"""The bench lock of `lightloop sweep`: at most one training at a time uses a bench with real instruments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["bench_resource", "run_point_on_bench"]


class _LeaseRefreshNoise:
    """Drops tornado's 'Exception in callback ... _refresh_leases': a worker killed holding the bench lock (a stopped
    sweep) cannot refresh the lock's lease; the lease then expires, which is the point."""
    def filter(self, record: Any) -> bool:   # noqa: D102
        return "_refresh_leases" not in record.getMessage()


def run_point_on_bench(run: Callable[[dict[str, Any]], dict[str, Any]], task: dict[str, Any],
                       resource: str) -> dict[str, Any]:
    """run(task) holding the cluster-wide Dask lock of the bench: at most one task uses a bench at a time."""
    import logging

    from dask.distributed import Lock

    tornado_log = logging.getLogger("tornado.application")
    if not any(isinstance(f, _LeaseRefreshNoise) for f in tornado_log.filters):
        tornado_log.addFilter(_LeaseRefreshNoise())
    with Lock(resource):
        return run(task)


def bench_resource(cfg: Any, exclusive: bool | None = None) -> str | None:
    """The Dask lock / worker-resource name of a config's bench ('bench:<name>'), or None when runs may share it:
    auto (None) = exclusive when the config drives real instruments (not twins, not an auto-started wire twin)."""
    if exclusive is None:
        insts = getattr(cfg, "instruments", None) or {}
        em = getattr(cfg, "emulator", None)
        exclusive = any(s.driver != "twin" for s in insts.values()) and not (em is not None and em.autostart)
    return f"bench:{cfg.bench}" if exclusive else None
