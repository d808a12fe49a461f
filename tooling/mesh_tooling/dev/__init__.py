"""The local dev stack: broker, schema registry, Postgres, Directus and a worker."""
