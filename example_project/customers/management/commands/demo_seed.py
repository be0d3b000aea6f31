"""Create the demo's tenants, an admin login and some data. Safe to run again."""

import random

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django_tenants.utils import schema_context

from example_project.customers.models import Client, Domain

TENANTS = [("acme", "Acme Corp"), ("globex", "Globex"), ("initech", "Initech")]


class Command(BaseCommand):
    help = "Create demo tenants (schemas), an admin user (admin/admin) and sample data."

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=50)
        parser.add_argument("--orders", type=int, default=500)

    def handle(self, *args, customers: int, orders: int, **options):
        if customers < 0 or orders < 0:
            self.stderr.write(self.style.ERROR("--customers and --orders must be >= 0"))
            raise SystemExit(1)
        public, _ = Client.objects.get_or_create(schema_name="public", defaults={"name": "Public"})
        for host in ("localhost", "127.0.0.1"):
            Domain.objects.get_or_create(
                domain=host, defaults={"tenant": public, "is_primary": host == "localhost"}
            )
        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.com", "admin")
        for schema, name in TENANTS:
            tenant, created = Client.objects.get_or_create(schema_name=schema, defaults={"name": name})
            Domain.objects.get_or_create(
                domain=f"{schema}.localhost", defaults={"tenant": tenant, "is_primary": True}
            )
            self._seed(tenant, customers, orders)
            self.stdout.write(f"tenant {schema}: {'created' if created else 'present'}")
        call_command("seed_events", *(schema for schema, _ in TENANTS))
        self.stdout.write(self.style.SUCCESS("demo data ready"))

    def _seed(self, tenant: Client, customers: int, orders: int) -> None:
        from example_project.shop.models import Customer, Order

        rng = random.Random(tenant.schema_name)
        with schema_context(tenant.schema_name), transaction.atomic():
            if Customer.objects.exists():
                return
            people = Customer.objects.bulk_create(
                Customer(name=f"{tenant.name} customer {i}", email=f"c{i}@{tenant.schema_name}.test")
                for i in range(customers)
            )
            if people:
                Order.objects.bulk_create(
                    Order(
                        customer=rng.choice(people),
                        status=rng.choice(list(Order.Status)),
                        total_cents=rng.randint(100, 100_000),
                    )
                    for _ in range(orders)
                )
