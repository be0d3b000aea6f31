"""Request middleware: the request's tenant becomes the current tenant, sync and async.

Place it after django-tenants' ``TenantMainMiddleware`` when schemas are used: a request whose
host resolved to a tenant runs in that tenant's context. Otherwise (row-level tenancy) the
tenant comes from the ``TENANCY.HEADER`` request header or, with ``TENANCY.SUBDOMAIN``, from the
left-most label of the host, looked up by ``TENANCY.LOOKUP_FIELD``. An unknown or malformed
tenant is a 404 / 400; a request with no tenant runs with none, so tenant-scoped data fails
closed.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotFound

from data_arch.tenancy.context import InvalidTenantError, as_tenant, tenant_context
from data_arch.tenancy.registry import public_schema_name, resolve_tenant_by

__all__ = ["TenantMiddleware", "request_tenant_reference"]


def request_tenant_reference(request: HttpRequest) -> str | None:
    """The tenant named by the request's header or subdomain, unresolved; None if it names none."""
    from data_arch.conf import tenancy_settings

    config = tenancy_settings()
    if config.header:
        value = request.headers.get(config.header)
        if value is not None:
            return value.strip()
    if config.subdomain:
        host = request.get_host().split(":", 1)[0]
        labels = host.split(".")
        if len(labels) > 2 or (len(labels) == 2 and labels[1] == "localhost"):
            return labels[0]
    return None


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
        reference = request_tenant_reference(request)
        return None if reference is None else resolve_tenant_by(reference)

    @staticmethod
    def _refuse(exc: InvalidTenantError) -> HttpResponse:
        if str(exc).startswith("unknown tenant"):
            return HttpResponseNotFound(str(exc), content_type="text/plain")
        return HttpResponseBadRequest(str(exc), content_type="text/plain")

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        try:
            tenant = self._resolve(request)
        except InvalidTenantError as exc:
            return self._refuse(exc)
        if tenant is None:
            return self.get_response(request)
        with tenant_context(tenant):
            request.data_arch_tenant = as_tenant(tenant)
            return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        try:
            tenant = await sync_to_async(self._resolve)(request)
        except InvalidTenantError as exc:
            return self._refuse(exc)
        if tenant is None:
            return await self.get_response(request)
        # The context variable follows the request into sync_to_async threads and tasks.
        with tenant_context(tenant):
            request.data_arch_tenant = as_tenant(tenant)
            return await self.get_response(request)
