"""Primary/replica sets from ``DATA_ARCH["ROUTER"]``: which alias is what, for which apps."""

from __future__ import annotations

import dataclasses

from data_arch import conf

__all__ = ["RouterSet", "role_of", "router_config", "router_sets", "set_for_alias", "set_for_app"]


@dataclasses.dataclass(frozen=True)
class RouterSet:
    primary: str
    replicas: tuple[str, ...]
    apps: tuple[str, ...] = ()
    weights: tuple[tuple[str, int], ...] = ()

    def weight(self, alias: str) -> int:
        return dict(self.weights).get(alias, 1)


def router_config() -> conf.RouterSettings:
    """The validated ROUTER settings (memoised by :mod:`data_arch.conf`)."""
    return conf.router_settings()


# (the settings object they were built from, the sets, alias -> role); rebuilt when conf
# hands out a new settings object (a setting changed).
_built: tuple[conf.RouterSettings, list[RouterSet], dict[str, str]] | None = None


def _build() -> tuple[list[RouterSet], dict[str, str]]:
    global _built
    config = router_config()
    built = _built
    if built is not None and built[0] is config:
        return built[1], built[2]
    weights = tuple(config.weights.items())
    sets = [RouterSet(config.primary, config.replicas, (), weights)]
    for item in config.sets:
        sets.append(RouterSet(item["primary"], item["replicas"], item["apps"], weights))
    roles: dict[str, str] = {}
    for rset in sets:
        roles.update(dict.fromkeys(rset.replicas, "replica"))
        roles[rset.primary] = "primary"
    _built = (config, sets, roles)
    return sets, roles


def router_sets() -> list[RouterSet]:
    """The configured sets; the first (PRIMARY/REPLICAS) serves every app not listed in SETS."""
    return _build()[0]


def set_for_app(app_label: str, sets: list[RouterSet] | None = None) -> RouterSet:
    sets = router_sets() if sets is None else sets
    for rset in sets[1:]:
        if app_label in rset.apps:
            return rset
    return sets[0]


def set_for_alias(alias: str, sets: list[RouterSet] | None = None) -> RouterSet | None:
    sets = router_sets() if sets is None else sets
    for rset in sets:
        if alias == rset.primary or alias in rset.replicas:
            return rset
    return None


def role_of(alias: str) -> str | None:
    """``"primary"``, ``"replica"`` or None for an alias the router does not manage.

    Never raises: a malformed ROUTER setting is reported by data_arch.E001, and meanwhile no
    alias is routed.
    """
    try:
        return _build()[1].get(alias)
    except conf.SettingError:
        return None
