"""Carries a user's WAL token from the request that wrote to their next requests.

The token (``{primary alias: 'X/Y'}``) travels in a cookie signed with ``django.core.signing``
and expires after STICKY_SECONDS. A missing, expired or tampered cookie is ignored (tampering
is logged): the request then reads like any other.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core import signing

from data_arch.routing.sets import router_config
from data_arch.routing.state import RoutingState, routing_context, token_from
from data_arch.routing.wal import token as wal_token

__all__ = ["ReplicaRoutingMiddleware", "dumps_token", "loads_token"]

logger = logging.getLogger("data_arch.routing")
SALT = "data_arch.routing.wal"


def dumps_token(token: dict[str, str]) -> str:
    return signing.dumps(token, salt=SALT, compress=False)


def loads_token(value: str | None, max_age: float | None = None) -> dict[str, int]:
    """The positions in a signed token; ``{}`` for a missing, expired or bad one (logged)."""
    if not value:
        return {}
    try:
        data = signing.loads(value, salt=SALT, max_age=max_age)
        return token_from(data)
    except signing.SignatureExpired:
        return {}
    except (signing.BadSignature, ValueError) as exc:
        logger.warning("ignored an invalid WAL token (tampered or malformed): %s", exc)
        return {}


class ReplicaRoutingMiddleware:
    """One routing context per request, starting from the user's WAL cookie; sync and async.

    Put it early in MIDDLEWARE (after django-tenants' middleware is fine): every read after it
    uses one replica, and a request that wrote sets the cookie on its response.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _token(self, request: Any) -> dict[str, int]:
        config = router_config()
        return loads_token(request.COOKIES.get(config.cookie_name), config.sticky_seconds)

    def _finish(self, request: Any, response: Any, state: RoutingState) -> None:
        if not state.wrote:
            return
        config = router_config()
        if config.sticky_seconds <= 0:
            return
        token = wal_token(state)
        if not token:
            return
        response.set_cookie(
            config.cookie_name, dumps_token(token), max_age=config.sticky_seconds,
            httponly=True, samesite="Lax", secure=request.is_secure(),
        )

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        with routing_context(self._token(request)) as state:
            response = self.get_response(request)
            self._finish(request, response, state)
        return response

    async def __acall__(self, request: Any) -> Any:
        with routing_context(self._token(request)) as state:
            response = await self.get_response(request)
            if state.wrote:
                await sync_to_async(self._finish)(request, response, state)
        return response
