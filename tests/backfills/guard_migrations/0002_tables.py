from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [
        migrations.CreateModel("DdlParent", [("id", models.BigAutoField(primary_key=True))]),
        migrations.CreateModel("DdlChild", [
            ("id", models.BigAutoField(primary_key=True)),
            ("label", models.TextField(default="")),
            ("value", models.IntegerField(null=True)),
        ]),
    ]
