from django.http import HttpResponse
from django.urls import path

from example_project.billing.models import Account


def accounts(request):
    return HttpResponse(",".join(a.email for a in Account.objects.all()))


urlpatterns = [path("accounts/", accounts)]
