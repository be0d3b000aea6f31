from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_new_tables")]

    operations = [
        migrations.AddIndex("thing", models.Index(fields=["size"], name="thing_size")),
        migrations.AddConstraint("thing", models.CheckConstraint(
            condition=models.Q(size__gte=0), name="thing_size_positive")),
        migrations.AddField("thing", "other", models.ForeignKey("audit.Owner", models.CASCADE,
                                                                null=True, related_name="+")),
        migrations.AlterField("thing", "code", models.CharField(max_length=20)),
        migrations.AlterField("thing", "size", models.BigIntegerField(null=True)),
    ]
