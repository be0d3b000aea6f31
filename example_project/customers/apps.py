from django.apps import AppConfig


class CustomersConfig(AppConfig):
    name = "example_project.customers"
    label = "customers"
    verbose_name = "Tenants"
