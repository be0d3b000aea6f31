"""The demo's backfill: fill ``Customer.email_domain`` for the rows that existed before it.

Run it with ``python manage.py backfill run shop.customer_email_domain --all-tenants`` (its
migration also marks it pending in every tenant).
"""

from data_arch.backfills import register_backfill

register_backfill(
    "shop.customer_email_domain",
    queryset_or_model="shop.Customer",
    key="id",
    batch_sql_or_callable=(
        "UPDATE {table} SET email_domain = lower(split_part(email, '@', 2)) "
        "WHERE id = ANY(%(keys)s) AND email_domain IS NULL"
    ),
    per_tenant=True,
    description="fill Customer.email_domain from the email address",
)
