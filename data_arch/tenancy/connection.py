"""What tenancy adds to PostgreSQL connections (both called by :mod:`data_arch.wiring`).

* :func:`prepare`, for each new connection: ``cursor.copy()`` / ``cursor.stream()`` run with the
  current tenant's settings (:func:`data_arch.tenancy.rls.install_copy_guard`);
* :func:`install`, once: ``GROUP BY`` keeps every selected column of a row-level model. Django
  shortens it to the primary key on PostgreSQL, relying on the other columns depending on it;
  the key :class:`~data_arch.tenancy.operations.TenantKeys` gives the table is ``(tenant_id,
  id)``, so PostgreSQL refuses ``annotate(Count(...))`` grouped by ``id`` alone. The rule sits
  on the backend's features class because a query is compiled before its connection opens.
"""

from __future__ import annotations

from typing import Any

from data_arch.tenancy.rls import install_copy_guard

__all__ = ["install", "prepare"]


def _group_by_rule(original: Any) -> Any:
    def allows_group_by_selected_pks_on_model(self: Any, model: Any) -> bool:
        from data_arch.tenancy.models import is_tenant_model

        return not is_tenant_model(model) and original(self, model)

    return allows_group_by_selected_pks_on_model


def prepare(connection: Any) -> None:
    """Install tenancy's per-connection rules on ``connection`` (idempotent)."""
    install_copy_guard(connection)


def install() -> None:
    """Put the GROUP BY rule on the features class of every PostgreSQL alias (idempotent)."""
    from django.db import connections

    for alias in connections.settings:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        features_class = type(connection.features)
        current = features_class.allows_group_by_selected_pks_on_model
        if not getattr(current, "data_arch", False):
            rule = _group_by_rule(current)
            rule.data_arch = True  # type: ignore[attr-defined]
            features_class.allows_group_by_selected_pks_on_model = rule
