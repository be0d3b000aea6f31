"""Request middleware: the request's tenant becomes the current tenant, sync and async.

Where the tenant comes from, first match wins:

1. the host, through django-tenants: ``TenantMainMiddleware`` (placed before this one) set
   ``request.tenant`` to a tenant other than the public one;
2. the host, with ``TENANCY.SUBDOMAIN``: the left-most label of a host name, looked up by
   ``TENANCY.LOOKUP_FIELD`` (IP addresses and ``TENANCY.NON_TENANT_SUBDOMAINS`` such as ``www``
   name no tenant);
3. only when the host named none, the ``TENANCY.HEADER`` request header (off by default). The
   client chooses a header, so the tenant it names is used only when ``TENANCY.AUTHORIZE(request,
   tenant)`` returns True; otherwise the request is refused with 403. Place this middleware after
   ``AuthenticationMiddleware`` when the header is on, so the hook can look at ``request.user``.

A malformed reference is a 400, a well-formed one that names no tenant a 404. A request with no
tenant runs with none, so tenant-scoped data fails closed -- and a view that touched it anyway
gets a 404, not a 500.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseForbidden,
    HttpResponseNotFound,
)
from django.utils.module_loading import import_string

from data_arch.tenancy.context import (
    InvalidTenantError,
    NoTenantError,
    UnknownTenantError,
    as_tenant,
    tenant_context,
)
from data_arch.tenancy.registry import public_schema_name, resolve_tenant_by

__all__ = ["TenantMiddleware", "header_tenant_reference", "host_tenant_reference"]


class _Forbidden(Exception):
    pass


def host_tenant_reference(request: HttpRequest) -> str | None:
    """With ``TENANCY.SUBDOMAIN``, the tenant label of the request's host; None if it names none."""
    from data_arch.conf import tenancy_settings

    config = tenancy_settings()
    if not config.subdomain:
        return None
    host = request.get_host().lower()
    if host.startswith("["):  # an IPv6 literal, with or without a port
        return None
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None
    labels = host.split(".")
    if not (len(labels) > 2 or (len(labels) == 2 and labels[1] == "localhost")):
        return None
    if labels[0] in config.non_tenant_subdomains:
        return None
    return labels[0]


def header_tenant_reference(request: HttpRequest) -> str | None:
    """The value of the ``TENANCY.HEADER`` header (client-chosen), or None."""
    from data_arch.conf import tenancy_settings

    config = tenancy_settings()
    if not config.header:
        return None
    value = request.headers.get(config.header)
    return None if value is None else value.strip()


def _authorized(request: HttpRequest, tenant: Any) -> bool:
    from data_arch.conf import tenancy_settings

    path = tenancy_settings().authorize
    return bool(path) and import_string(path)(request, tenant) is True


class TenantMiddleware:
    """Run each request inside its tenant's :func:`tenant_context`."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _resolve(self, request: HttpRequest) -> Any:
        schema_tenant = getattr(request, "tenant", None)
        if schema_tenant is not None and getattr(schema_tenant, "schema_name", None) not in (
            None, public_schema_name()
        ):
            return schema_tenant
        reference = host_tenant_reference(request)
        if reference is not None:
            return resolve_tenant_by(reference)
        reference = header_tenant_reference(request)
        if reference is None:
            return None
        tenant = resolve_tenant_by(reference)
        if not _authorized(request, tenant):
            raise _Forbidden(f"this request may not act for tenant {reference!r}")
        return tenant

    def _resolve_or_refuse(self, request: HttpRequest) -> tuple[Any, HttpResponse | None]:
        try:
            return self._resolve(request), None
        except UnknownTenantError as exc:
            return None, HttpResponseNotFound(str(exc), content_type="text/plain")
        except InvalidTenantError as exc:
            return None, HttpResponseBadRequest(str(exc), content_type="text/plain")
        except _Forbidden as exc:
            return None, HttpResponseForbidden(str(exc), content_type="text/plain")

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        # A tenant-only view reached without a tenant: nothing of any tenant was read.
        if isinstance(exception, NoTenantError):
            return HttpResponseNotFound("this page belongs to a tenant", content_type="text/plain")
        return None

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        tenant, refusal = self._resolve_or_refuse(request)
        if refusal is not None:
            return refusal
        if tenant is None:
            return self.get_response(request)
        with tenant_context(tenant):
            request.data_arch_tenant = as_tenant(tenant)
            return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        tenant, refusal = await sync_to_async(self._resolve_or_refuse)(request)
        if refusal is not None:
            return refusal
        if tenant is None:
            return await self.get_response(request)
        # The context variable follows the request into sync_to_async threads and tasks.
        with tenant_context(tenant):
            request.data_arch_tenant = as_tenant(tenant)
            return await self.get_response(request)
