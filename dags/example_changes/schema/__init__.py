"""Stage "schema": the tables and indexes the shop needs."""
