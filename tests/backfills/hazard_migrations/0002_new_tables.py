from django.db import migrations, models


class Migration(migrations.Migration):
    """Indexes and constraints on tables created in the same migration: no hazard."""

    dependencies = [("audit", "0001_initial")]

    operations = [
        migrations.CreateModel("Owner", [("id", models.BigAutoField(primary_key=True))]),
        migrations.CreateModel("Thing", [
            ("id", models.BigAutoField(primary_key=True)),
            ("code", models.CharField(max_length=20, null=True)),
            ("size", models.IntegerField(null=True)),
        ]),
        migrations.AddIndex("thing", models.Index(fields=["code"], name="thing_code")),
        migrations.AddField("thing", "owner", models.ForeignKey("audit.Owner", models.CASCADE,
                                                                null=True)),
    ]
