"""Row-level tenancy: tenant-scoped models whose every query path fails closed.

A model that subclasses :class:`TenantModel` gets a ``tenant`` foreign key to the tenant model
and two managers:

* ``objects`` (also the base manager, so ForeignKey access, reverse managers, prefetching, saves
  and cascades use it): every queryset is bound to the tenant active when it was created and
  filters by it. With no tenant active it raises :class:`NoTenantError`; evaluated while another
  tenant is active it raises :class:`CrossTenantError`. ``None`` is never "all tenants".
* ``unscoped``: a plain manager for admin and maintenance code that means to cross tenants. On
  a connection subject to Row-Level Security it still sees only the current tenant's rows; real
  cross-tenant work goes through an alias whose role may bypass RLS (see the README).

Keys are Citus-ready: :class:`TenantForeignKey` joins on ``(tenant_id, fk)`` and the
:class:`~data_arch.tenancy.operations.TenantKeys` migration operation makes the table's primary
key ``(tenant_id, id)`` and its foreign keys composite. Django keeps ``id`` as the ORM's primary
key: it comes from one sequence, so it is unique on its own, and every ORM query also carries
the tenant.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.db.models.deletion import Collector
from django.db.models.lookups import Exact
from django.db.models.signals import class_prepared, pre_save
from django.db.models.sql.datastructures import BaseTable
from django.db.models.sql.query import Query
from django.db.models.sql.where import AND, WhereNode

from data_arch.tenancy import registry
from data_arch.tenancy.context import (
    CrossTenantError,
    InvalidTenantError,
    NoTenantError,
    current_tenant,
    require_tenant,
)
from data_arch.tenancy.registry import TENANT_FIELD

__all__ = [
    "TENANT_FIELD",
    "TenantForeignKey",
    "TenantManager",
    "TenantModel",
    "TenantQuerySet",
    "UnscopedManager",
    "UnscopedQuerySet",
    "is_tenant_model",
    "tenant_index",
    "tenant_pk_for",
    "tenant_unique",
]

_UNBOUND = object()


def tenant_model_label() -> str:
    """The tenant model as ``"app_label.Model"``: ``DATA_ARCH["TENANCY"]["MODEL"]``, else
    django-tenants' ``TENANT_MODEL``."""
    label = registry.tenant_model_label()
    if not label:
        raise InvalidTenantError(
            "row-level tenancy needs a tenant model: set DATA_ARCH['TENANCY']['MODEL'] "
            "(or django-tenants' TENANT_MODEL) to 'app_label.Model'"
        )
    return label


def is_tenant_model(model: Any) -> bool:
    return isinstance(model, type) and issubclass(model, TenantModel) and not model._meta.abstract


def tenant_pk_for(model: type[models.Model]) -> Any:
    """The active tenant's primary key, as ``model``'s tenant column stores it.

    Raises NoTenantError when no tenant is active, so a missing tenant never widens a query.
    """
    tenant = require_tenant()
    if tenant.pk is None:
        raise NoTenantError(
            f"tenant {tenant.key!r} has no primary key, and {model._meta.label} is scoped by "
            "tenant id: activate it with tenant_context(Tenant(pk=..., schema_name=...)) or a "
            "tenant model instance"
        )
    target = model._meta.get_field(TENANT_FIELD).target_field
    try:
        return target.to_python(tenant.pk)
    except ValidationError:
        raise InvalidTenantError(
            f"tenant primary key {tenant.pk!r} is not a valid {target.get_internal_type()} "
            f"for {model._meta.label}.{TENANT_FIELD}"
        ) from None


def _refuse_foreign_ids(model: type[models.Model], ids: list[Any], tenant_pk: Any, using: str) -> None:
    """Refuse explicit ids that another tenant's rows already have.

    The table's key is ``(tenant_id, id)``, so PostgreSQL would accept the row; but Django
    deletes and updates collected rows by ``id`` alone (cascades, ``SET_NULL``), so ids are kept
    unique across tenants, as the sequence makes them. Under Row-Level Security this sees only
    the current tenant, and every statement is bounded by the policy anyway.
    """
    if not ids:
        return
    taken = list(
        model.unscoped.using(using).filter(pk__in=ids).exclude(**{f"{TENANT_FIELD}_id": tenant_pk})
        .values_list("pk", flat=True)[:5]
    )
    if taken:
        raise CrossTenantError(
            f"{model._meta.label} id(s) {taken!r} already belong to another tenant: ids are unique "
            "across tenants; leave the id unset to get a new one. Nothing was written"
        )


class TenantQuerySet(models.QuerySet):
    """A queryset bound to one tenant; it refuses to run for any other (or for none)."""

    _tenant_pk: Any = _UNBOUND

    def _check_tenant(self) -> Any:
        bound = self._tenant_pk
        if bound is _UNBOUND:
            raise NoTenantError(
                f"this {self.model._meta.label} queryset was not made by its tenant-scoped "
                "manager; use Model.objects (scoped) or Model.unscoped (deliberately unscoped)"
            )
        if current_tenant() is None:
            raise NoTenantError(
                f"{self.model._meta.label} rows of tenant {bound!r} were queried after that "
                "tenant's context ended: evaluate the queryset inside tenant_context()"
            )
        active = tenant_pk_for(self.model)
        if active != bound:
            raise CrossTenantError(
                f"a {self.model._meta.label} queryset made for tenant {bound!r} was used while "
                f"tenant {active!r} is active; build querysets inside the tenant they serve"
            )
        return bound

    # Every SQL statement Django builds from a queryset starts from ``self.query``, so checking
    # here covers iteration, count, exists, explain, aggregate, update, delete, in_bulk,
    # iterator, subqueries and combinators, sync and async alike.
    @property
    def query(self):  # type: ignore[override]
        self._check_tenant()
        return models.QuerySet.query.fget(self)  # type: ignore[attr-defined]

    @query.setter
    def query(self, value):
        models.QuerySet.query.fset(self, value)  # type: ignore[attr-defined]

    def _clone(self):
        clone = super()._clone()
        clone._tenant_pk = self._tenant_pk
        return clone

    def _fetch_all(self) -> None:
        # Cached results must not be handed to another tenant either.
        self._check_tenant()
        super()._fetch_all()

    def __getitem__(self, k: Any) -> Any:
        # qs[0], qs[:5] and repr(qs) read a filled result cache without _fetch_all().
        if self._result_cache is not None:
            self._check_tenant()
        return super().__getitem__(k)

    def _filter_or_exclude_inplace(self, negate: bool, args: Any, kwargs: Any) -> None:
        super()._filter_or_exclude_inplace(negate, args, kwargs)
        if self._tenant_pk is not _UNBOUND:
            _scope_subqueries(self._query.where, self._tenant_pk)

    def _claim(self, obj: models.Model, tenant_pk: Any) -> None:
        own = getattr(obj, f"{TENANT_FIELD}_id")
        if own is None:
            setattr(obj, f"{TENANT_FIELD}_id", tenant_pk)
        elif self.model._meta.get_field(TENANT_FIELD).target_field.to_python(own) != tenant_pk:
            raise CrossTenantError(
                f"{obj._meta.label} {obj.pk!r} belongs to tenant {own!r}, not to the active "
                f"tenant {tenant_pk!r}; nothing was written"
            )

    def bulk_create(self, objs, *args: Any, **kwargs: Any):
        tenant_pk = self._check_tenant()
        objs = list(objs)
        for obj in objs:  # all checked before anything is written
            self._claim(obj, tenant_pk)
        _refuse_foreign_ids(self.model, [o.pk for o in objs if o.pk is not None], tenant_pk, self.db)
        return super().bulk_create(objs, *args, **kwargs)

    def bulk_update(self, objs, fields, *args: Any, **kwargs: Any):
        tenant_pk = self._check_tenant()
        if TENANT_FIELD in fields or f"{TENANT_FIELD}_id" in fields:
            raise CrossTenantError("bulk_update() cannot move rows to another tenant")
        objs = list(objs)
        for obj in objs:
            self._claim(obj, tenant_pk)
        return super().bulk_update(objs, fields, *args, **kwargs)

    def update(self, **kwargs: Any) -> int:
        self._check_tenant()
        if TENANT_FIELD in kwargs or f"{TENANT_FIELD}_id" in kwargs:
            raise CrossTenantError(
                f"update() cannot change {self.model._meta.label}.{TENANT_FIELD}: rows never "
                "move between tenants"
            )
        return super().update(**kwargs)


def _scope_subqueries(node: Any, tenant_pk: Any) -> None:
    """Filter every subquery Django built under ``node`` by the tenant.

    ``exclude()`` and negated lookups across a multi-valued relation become ``NOT EXISTS
    (SELECT ... FROM child WHERE child.fk = parent.id)``: Django trims the join that carried
    the tenant, and ids are unique per tenant only (a row may be saved with an explicit id that
    another tenant uses too), so the subquery's tenant tables get the tenant back here.
    """
    if isinstance(node, WhereNode):
        for child in node.children:
            _scope_subqueries(child, tenant_pk)
        return
    inner = getattr(node, "query", None)
    if isinstance(inner, Query):
        _scope_query(inner, tenant_pk)
    for attr in ("lhs", "rhs"):
        value = getattr(node, attr, None)
        if isinstance(value, Query):
            _scope_query(value, tenant_pk)
        elif value is not None and hasattr(value, "query"):
            _scope_subqueries(value, tenant_pk)


def _scope_query(query: Query, tenant_pk: Any) -> None:
    if getattr(query, "_data_arch_scoped", None) == tenant_pk:
        return
    by_table = {m._meta.db_table: m for m in registry.tenant_models()}
    for alias, join in list(query.alias_map.items()):
        model = by_table.get(join.table_name)
        # The FROM entry of the subquery: joins from it carry the tenant themselves.
        if model is not None and isinstance(join, BaseTable) and query.alias_refcount[alias] > 0:
            column = model._meta.get_field(TENANT_FIELD).get_col(alias)
            query.where.add(Exact(column, tenant_pk), AND)
    query._data_arch_scoped = tenant_pk
    _scope_subqueries(query.where, tenant_pk)


class TenantManager(models.Manager.from_queryset(TenantQuerySet)):  # type: ignore[misc]
    """The scoped manager: querysets of the active tenant's rows only."""

    def get_queryset(self) -> TenantQuerySet:
        tenant_pk = tenant_pk_for(self.model)
        queryset = super().get_queryset()
        queryset._tenant_pk = tenant_pk
        # Filtering the fresh query in place: it has not been shared yet.
        queryset._query.add_q(Q(**{f"{TENANT_FIELD}_id": tenant_pk}))
        return queryset


class _UnscopedCollector(Collector):
    """Collects related rows of every tenant: through the unscoped managers, and by tenant."""

    def related_objects(self, related_model, related_fields, objs):
        if not is_tenant_model(related_model):
            return super().related_objects(related_model, related_fields, objs)
        by_tenant: dict[Any, list[Any]] = {}
        for obj in objs:
            by_tenant.setdefault(getattr(obj, f"{TENANT_FIELD}_id", None), []).append(obj)
        predicate = Q()
        for field in related_fields:
            for tenant_pk, members in by_tenant.items():
                condition = Q(**{f"{field.name}__in": members})
                if tenant_pk is not None and isinstance(field, TenantForeignKey):
                    condition &= Q(**{f"{TENANT_FIELD}_id": tenant_pk})
                predicate |= condition
        return related_model.unscoped.using(self.using).filter(predicate)


class UnscopedQuerySet(models.QuerySet):
    """The unscoped manager's queryset: deletes cascade across tenants too.

    Django's delete collects related rows through each related model's base manager, which for
    a row-level model is the scoped one (it fails with no tenant, and in another tenant it would
    leave the children behind); this collects them through their unscoped managers.
    """

    def delete(self):
        if self.query.is_sliced:
            raise TypeError("Cannot use 'limit' or 'offset' with delete().")
        if self._fields is not None:
            raise TypeError("Cannot call delete() after .values() or .values_list()")
        del_query = self._chain()
        del_query._for_write = True
        del_query.query.select_for_update = False
        del_query.query.select_related = False
        del_query.query.clear_ordering(force=True)
        collector = _UnscopedCollector(using=del_query.db, origin=self)
        collector.collect(del_query)
        deleted = collector.delete()
        self._result_cache = None
        return deleted

    delete.alters_data = True
    delete.queryset_only = True

    async def adelete(self):
        from asgiref.sync import sync_to_async

        return await sync_to_async(self.delete)()

    adelete.alters_data = True
    adelete.queryset_only = True


UnscopedManager = models.Manager.from_queryset(UnscopedQuerySet)


class TenantForeignKey(models.ForeignKey):
    """A foreign key between two tenant-scoped models that joins on the tenant too.

    Joins (``select_related``, filters across the relation) get ``AND target.tenant_id =
    source.tenant_id``, forward access fetches the related row within the same tenant, and the
    database constraint is the composite ``(tenant_id, <column>) -> (tenant_id, id)`` that
    :class:`~data_arch.tenancy.operations.TenantKeys` creates (so Django's own single-column
    constraint is off), which is what Citus needs to co-locate the two tables.
    """

    def __init__(self, to: Any, on_delete: Any, **kwargs: Any) -> None:
        kwargs["db_constraint"] = False
        kwargs.setdefault("db_index", False)
        super().__init__(to, on_delete, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("db_constraint", None)
        return name, path, args, kwargs

    def get_extra_restriction(self, alias, related_alias):
        if alias is None or related_alias is None:
            return None
        target = self.remote_field.model._meta.get_field(TENANT_FIELD)
        source = self.model._meta.get_field(TENANT_FIELD)
        return WhereNode([Exact(target.get_col(alias), source.get_col(related_alias))], AND)

    def get_extra_descriptor_filter(self, instance):
        return {f"{TENANT_FIELD}_id": getattr(instance, f"{TENANT_FIELD}_id")}


class TenantModel(models.Model):
    """Abstract base of row-level tenant-scoped models (a shared table, one tenant column)."""

    tenant = models.ForeignKey(
        tenant_model_label(),
        on_delete=models.DO_NOTHING,  # delete a tenant's rows explicitly; never by cascade
        related_name="+",
        db_index=False,  # every tenant-leading index, the primary key included, serves it
        editable=False,
    )

    objects = TenantManager()
    unscoped = UnscopedManager()

    class Meta:
        abstract = True
        base_manager_name = "objects"

    def _own_tenant(self) -> Any:
        tenant_pk = tenant_pk_for(type(self))
        own = getattr(self, f"{TENANT_FIELD}_id")
        if own is None:
            setattr(self, f"{TENANT_FIELD}_id", tenant_pk)
        elif self._meta.get_field(TENANT_FIELD).target_field.to_python(own) != tenant_pk:
            raise CrossTenantError(
                f"{self._meta.label} {self.pk!r} belongs to tenant {own!r}, not to the active "
                f"tenant {tenant_pk!r}; nothing was written"
            )
        return tenant_pk

    def validate_constraints(self, exclude: Any = None) -> None:
        # Forms and the admin leave the (non-editable) tenant out of validation, and Django then
        # skips every constraint that mentions it: all of tenant_unique(). The tenant is the
        # active one, so validate them with it.
        exclude = set(exclude or ())
        if TENANT_FIELD in exclude and current_tenant() is not None:
            self._own_tenant()
            exclude.discard(TENANT_FIELD)
        super().validate_constraints(exclude=exclude)

    def _check_new_id(self, using: str | None) -> None:
        if self._state.adding and self.pk is not None:
            from django.db import router

            _refuse_foreign_ids(
                type(self), [self.pk], self._own_tenant(),
                using or router.db_for_write(type(self), instance=self),
            )

    def save(self, *args: Any, **kwargs: Any) -> None:
        self._own_tenant()
        self._check_new_id(kwargs.get("using"))
        super().save(*args, **kwargs)

    save.alters_data = True

    def delete(self, *args: Any, **kwargs: Any):
        self._own_tenant()
        return super().delete(*args, **kwargs)

    delete.alters_data = True


def _scope_base_manager(sender: type[models.Model], **kwargs: Any) -> None:
    # A subclass that declares its own Meta without inheriting TenantModel.Meta would fall back
    # to an unscoped base manager; related access must stay scoped whatever Meta says.
    if is_tenant_model(sender) and not sender._meta.base_manager_name:
        sender._meta.base_manager_name = "objects"


class_prepared.connect(_scope_base_manager, dispatch_uid="data_arch.tenancy.scope_base_manager")


def _check_raw_save(sender: type[models.Model], instance: Any, raw: bool = False, **kwargs: Any):
    # loaddata saves through Model.save_base(obj, raw=True), never through obj.save().
    if raw and is_tenant_model(sender):
        instance._own_tenant()
        instance._check_new_id(kwargs.get("using"))


pre_save.connect(_check_raw_save, dispatch_uid="data_arch.tenancy.check_raw_save")


# --------------------------------------------------------------------------- Meta helpers


def _expressions(items: tuple[Any, ...]) -> list[Any]:
    expressions: list[Any] = [F(TENANT_FIELD)]
    for item in items:
        if isinstance(item, str):
            expressions.append(F(item[1:]).desc() if item.startswith("-") else F(item))
        else:
            expressions.append(item)
    return expressions


def tenant_index(*fields: Any, name: str, condition: Q | None = None, **kwargs: Any) -> models.Index:
    """An index led by the tenant column: ``tenant_index("due_on", condition=Q(status="open"))``,
    ``tenant_index(Lower("email"), name=...)``. Fields are names (``"-field"`` for descending)
    or expressions; ``condition`` makes it partial."""
    if not fields:
        raise ValueError("tenant_index() needs at least one field or expression after the tenant")
    if all(isinstance(f, str) for f in fields):
        return models.Index(fields=[TENANT_FIELD, *fields], name=name, condition=condition, **kwargs)
    return models.Index(*_expressions(fields), name=name, condition=condition, **kwargs)


def tenant_unique(
    *fields: Any, name: str, condition: Q | None = None, **kwargs: Any
) -> models.UniqueConstraint:
    """A unique constraint per tenant: ``tenant_unique("number")``,
    ``tenant_unique(Lower("email"), name=...)``, optionally partial with ``condition``."""
    if not fields:
        raise ValueError("tenant_unique() needs at least one field or expression after the tenant")
    if all(isinstance(f, str) for f in fields):
        return models.UniqueConstraint(
            fields=[TENANT_FIELD, *fields], name=name, condition=condition, **kwargs
        )
    return models.UniqueConstraint(*_expressions(fields), name=name, condition=condition, **kwargs)
