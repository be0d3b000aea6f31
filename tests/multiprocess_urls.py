"""URLs of the multiprocess metrics test: one cache read per request, and /metrics."""

import os

from django.http import JsonResponse
from django.urls import path

from data_arch.caching import get_or_load
from data_arch.prometheus import metrics_view


def cache_read(request):
    get_or_load("mp-web", lambda: 1, 60)
    return JsonResponse({"pid": os.getpid()})


urlpatterns = [path("read/", cache_read), path("metrics", metrics_view)]
