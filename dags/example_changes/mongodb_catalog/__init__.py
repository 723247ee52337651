"""Change units of the MongoDB example: a product catalog (see flamingock_mongodb_example.py)."""
