from data_arch.caching import register_warmer
from example_project.shop.stats import dashboard_stats


@register_warmer("shop.dashboard")
def warm_dashboard() -> None:
    dashboard_stats()
