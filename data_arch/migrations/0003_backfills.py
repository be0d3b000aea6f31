# The durable cursor table of data_arch.backfills.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("data_arch", "0002_admin_pages"),
    ]

    operations = [
        migrations.CreateModel(
            name='BackfillCursor',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=200)),
                ('tenant', models.CharField(blank=True, default='', max_length=100)),
                ('partition', models.CharField(blank=True, default='', max_length=63)),
                ('state', models.CharField(choices=[('pending', 'Pending'), ('running', 'Running'), ('paused', 'Paused'), ('cancelled', 'Cancelled'), ('failed', 'Failed'), ('done', 'Done')], default='pending', max_length=16)),
                ('position', models.JSONField(blank=True, null=True)),
                ('upper', models.JSONField(blank=True, null=True)),
                ('rows_done', models.BigIntegerField(default=0)),
                ('rows_estimated', models.BigIntegerField(blank=True, null=True)),
                ('batches', models.IntegerField(default=0)),
                ('batch_size', models.IntegerField(default=0)),
                ('seconds', models.FloatField(default=0.0)),
                ('throttled_seconds', models.FloatField(default=0.0)),
                ('lock_timeouts', models.IntegerField(default=0)),
                ('max_lag_bytes', models.BigIntegerField(default=0)),
                ('error', models.TextField(blank=True, default='')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'db_table': 'data_arch_backfill',
                'constraints': [models.UniqueConstraint(fields=('name', 'tenant', 'partition'), name='data_arch_backfill_unique')],
            },
        ),
    ]
