from django.db import migrations, models

from data_arch.backfills.operations import EnqueueBackfill


class Migration(migrations.Migration):
    """A nullable column (a catalog-only change), then the backfill that fills it, queued rather
    than run inside the migration."""

    dependencies = [
        ("shop", "0001_initial"),
        ("data_arch", "0003_backfills"),
    ]

    operations = [
        migrations.AddField(
            model_name="customer",
            name="email_domain",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        EnqueueBackfill("shop.customer_email_domain"),
    ]
