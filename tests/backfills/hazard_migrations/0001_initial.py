import importlib

# The audit app's real first migration (applied in the test database).
Migration = importlib.import_module("example_project.audit.migrations.0001_initial").Migration
