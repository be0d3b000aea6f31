"""data_arch: the data layer a Django SaaS on PostgreSQL needs to grow."""

__version__ = "0.1.0"

__all__ = ["__version__"]
