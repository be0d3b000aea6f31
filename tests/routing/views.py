from django.contrib.auth.models import User
from django.http import HttpResponse, JsonResponse
from django.urls import path


def create_user(request):
    User.objects.create(username=request.GET["username"])
    return HttpResponse(status=201)


def read_user(request):
    user = User.objects.filter(username=request.GET["username"]).first()
    return JsonResponse({"found": user is not None, "db": user._state.db if user else None,
                         "routed": User.objects.all().db})


async def read_user_async(request):
    user = await User.objects.filter(username=request.GET["username"]).afirst()
    return JsonResponse({"found": user is not None, "db": user._state.db if user else None})


urlpatterns = [
    path("create/", create_user),
    path("read/", read_user),
    path("read-async/", read_user_async),
]
