import factory

from example_project.customers.models import Client, Domain
from example_project.shop.models import Customer, Order


class ClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Client
        django_get_or_create = ("schema_name",)

    schema_name = factory.Sequence(lambda n: f"tenant_{n}")
    name = factory.LazyAttribute(lambda o: o.schema_name.replace("_", " ").title())


class DomainFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Domain

    tenant = factory.SubFactory(ClientFactory)
    domain = factory.LazyAttribute(lambda o: f"{o.tenant.schema_name}.localhost")
    is_primary = True


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.LazyAttribute(lambda o: f"{o.name.replace(' ', '.').lower()}@example.com")


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    customer = factory.SubFactory(CustomerFactory)
    total_cents = factory.Sequence(lambda n: 100 + n)
