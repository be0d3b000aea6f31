"""Every SQL statement of row-level tenancy: RLS policies, tenant keys, catalog queries.

Identifiers go through ``quote_name``; values are parameters.
"""

from __future__ import annotations

from collections.abc import Callable

Quote = Callable[[str], str]

#: Name of the policy the RLS operation creates on every row-level table.
POLICY_NAME = "data_arch_tenant_isolation"


def tenant_predicate(quote: Quote, column: str, cast: str) -> str:
    # '' and NULL both mean "no tenant": once a custom setting has been defined in a session,
    # current_setting(name, true) returns '' after the transaction that set it ends.
    return f"{quote(column)} = nullif(current_setting(%s, true), '')::{cast}"


def enable_rls(quote: Quote, table: str, column: str, cast: str, setting: str):
    """Statements (sql, params) that enable and force RLS and create the tenant policy."""
    predicate = tenant_predicate(quote, column, cast)
    return [
        (f"ALTER TABLE {quote(table)} ENABLE ROW LEVEL SECURITY", None),
        (f"ALTER TABLE {quote(table)} FORCE ROW LEVEL SECURITY", None),
        (
            (
                f"CREATE POLICY {quote(POLICY_NAME)} ON {quote(table)} AS PERMISSIVE FOR ALL "
                f"USING ({predicate}) WITH CHECK ({predicate})"
            ),
            [setting, setting],
        ),
    ]


def disable_rls(quote: Quote, table: str):
    return [
        (f"DROP POLICY IF EXISTS {quote(POLICY_NAME)} ON {quote(table)}", None),
        (f"ALTER TABLE {quote(table)} NO FORCE ROW LEVEL SECURITY", None),
        (f"ALTER TABLE {quote(table)} DISABLE ROW LEVEL SECURITY", None),
    ]


def replace_primary_key(quote: Quote, table: str, constraint: str, columns: list[str]) -> str:
    # One statement, so the table is never without a primary key.
    cols = ", ".join(quote(c) for c in columns)
    return (
        f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(constraint)}, "
        f"ADD CONSTRAINT {quote(constraint)} PRIMARY KEY ({cols})"
    )


def add_composite_fk(
    quote: Quote, table: str, name: str, columns: list[str], target: str, target_columns: list[str]
) -> str:
    cols = ", ".join(quote(c) for c in columns)
    target_cols = ", ".join(quote(c) for c in target_columns)
    return (
        f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(name)} FOREIGN KEY ({cols}) "
        f"REFERENCES {quote(target)} ({target_cols}) DEFERRABLE INITIALLY DEFERRED"
    )


def drop_constraint(quote: Quote, table: str, name: str) -> str:
    return f"ALTER TABLE {quote(table)} DROP CONSTRAINT IF EXISTS {quote(name)}"


SET_CONFIG = "set_config(%s, %s, true)"

TABLE_SECURITY = """
SELECT c.relrowsecurity, c.relforcerowsecurity,
       pg_has_role(c.relowner, 'MEMBER') AS owned,
       pg_get_userbyid(c.relowner) AS owner,
       EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = %s) AS policy
FROM pg_class c WHERE c.oid = to_regclass(%s)
"""

KEY_COLUMNS = """
SELECT con.conname, con.contype,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.n)::text[] AS columns,
       con.confrelid::regclass::text AS target
FROM pg_constraint con WHERE con.conrelid = to_regclass(%s) AND con.contype IN ('p', 'u', 'f')
"""

ROLE = "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"

#: (schema, table) pairs of ``%s`` schemas x ``%s`` tables where the schema exists and the table
#: does not: with django-tenants' search_path ("<tenant>", public) such a table resolves to
#: public's table of that name, if there is one.
MISSING_SCHEMA_TABLES = """
SELECT s.name, t.name
FROM unnest(%s::text[]) AS s(name) CROSS JOIN unnest(%s::text[]) AS t(name)
WHERE EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = s.name)
  AND to_regclass(format('%%I.%%I', s.name, t.name)) IS NULL
ORDER BY 1, 2
"""
