"""Stage "data": rows and derived objects, once the schema is in place."""
