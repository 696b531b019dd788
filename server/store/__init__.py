"""PostgreSQL: schema, connections, migrations and the embedded server."""
