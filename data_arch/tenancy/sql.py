"""Every SQL statement of row-level tenancy: RLS policies, tenant keys, catalog queries.

Identifiers go through ``quote_name``; values are parameters.
"""

from __future__ import annotations

from collections.abc import Callable

Quote = Callable[[str], str]

#: Name of the policy the RLS operation creates on every row-level table.
POLICY_NAME = "data_arch_tenant_isolation"

#: The signed tenant context: a one-row table of HMAC-SHA256 pads that only its owner can read,
#: and the SECURITY DEFINER function the policy calls to verify the setting against them.
SECRET_TABLE = "data_arch_rls_secret"
VERIFY_FUNCTION = "data_arch_tenant_id"
#: What a MAC names when the client cannot know its server process (a pooler in between).
POOLED = "pooled"


def tenant_predicate(quote: Quote, column: str, cast: str, function: str | None = None) -> str:
    # '' and NULL both mean "no tenant": once a custom setting has been defined in a session,
    # current_setting(name, true) returns '' after the transaction that set it ends.
    if function is not None:
        # A scalar subquery: an InitPlan, so the function runs once per statement, not per row.
        return f"{quote(column)} = (SELECT {function}(%s))::{cast}"
    return f"{quote(column)} = nullif(current_setting(%s, true), '')::{cast}"


def signed_context(quote: Quote, schema: str, inner_pad: bytes, outer_pad: bytes):
    """Statements (sql, params) creating the secret table and the verifying function.

    The setting holds ``<tenant id>:<hex HMAC-SHA256(secret, "<tenant id>/<binding>")>``, the
    binding being this server process's id (a direct connection) or ``pooled`` (a client
    behind a transaction pooler, which cannot know the process); the function returns the
    tenant id when the MAC verifies for either, else NULL. HMAC is computed from the stored
    pads with the built-in sha256() (no extension):
    HMAC(K, m) = sha256((K xor opad) || sha256((K xor ipad) || m)).
    """
    table = f"{quote(schema)}.{quote(SECRET_TABLE)}"
    function = f"{quote(schema)}.{quote(VERIFY_FUNCTION)}"
    return [
        (
            (
                f"CREATE TABLE IF NOT EXISTS {table} (id integer PRIMARY KEY CHECK (id = 1), "
                "inner_pad bytea NOT NULL, outer_pad bytea NOT NULL)"
            ),
            None,
        ),
        (f"REVOKE ALL ON {table} FROM PUBLIC", None),
        # Default privileges (ALTER DEFAULT PRIVILEGES ... GRANT SELECT ON TABLES) give the new
        # table to the application role too: take every grant back but the owner's.
        (
            (
                "DO $do$ DECLARE r record; BEGIN FOR r IN SELECT DISTINCT a.grantee::regrole::text "
                "AS role FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = "
                f"'{table}'::regclass AND a.grantee <> c.relowner AND a.grantee <> 0 LOOP "
                f"EXECUTE format('REVOKE ALL ON {table} FROM %s', r.role); END LOOP; END $do$"
            ),
            None,
        ),
        (
            (
                f"INSERT INTO {table} (id, inner_pad, outer_pad) VALUES (1, %s, %s) ON CONFLICT (id) "
                "DO UPDATE SET inner_pad = EXCLUDED.inner_pad, outer_pad = EXCLUDED.outer_pad"
            ),
            [inner_pad, outer_pad],
        ),
        (
            # PL/pgSQL: its statements' plans are cached per session, where a LANGUAGE sql
            # body (SECURITY DEFINER, so never inlined) is planned again on every call.
            (
                f"CREATE OR REPLACE FUNCTION {function}(setting text) RETURNS text "
                "LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS "
                "$fn$ DECLARE v text := current_setting(setting, true); tenant text; mac text; "
                "ipad bytea; opad bytea; BEGIN "
                "IF v IS NULL OR v !~ '^.+:[0-9a-f]{64}$' THEN RETURN NULL; END IF; "
                "tenant := left(v, -65); mac := right(v, 64); "
                f"SELECT s.inner_pad, s.outer_pad INTO ipad, opad FROM {table} s; "
                # The process binding first; the pooled one only when it does not match.
                "IF mac = encode(sha256(opad || sha256(ipad || convert_to(tenant || '/' || "
                "pg_backend_pid()::text, 'UTF8'))), 'hex') THEN RETURN tenant; END IF; "
                "IF mac = encode(sha256(opad || sha256(ipad || convert_to(tenant || '/' || "
                f"'{POOLED}', 'UTF8'))), 'hex') THEN RETURN tenant; END IF; "
                "RETURN NULL; END $fn$"
            ),
            None,
        ),
        (f"REVOKE ALL ON FUNCTION {function}(text) FROM PUBLIC", None),
        (f"GRANT EXECUTE ON FUNCTION {function}(text) TO PUBLIC", None),
    ]


def enable_rls(
    quote: Quote, table: str, column: str, cast: str, setting: str, function: str | None = None
):
    """Statements (sql, params) that enable and force RLS and create the tenant policy."""
    predicate = tenant_predicate(quote, column, cast, function)
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

CURRENT_SCHEMA = "SELECT current_schema()"

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

BACKEND_PID = "SELECT pg_backend_pid()"

TRACK_ACTIVITIES = "SELECT current_setting('track_activities')"

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
