from flamingock_provider.changes import change

TABLE = "flamingockExampleProducts"
PRODUCTS = [
    {"sku": "tea-001", "name": "Green tea", "price": "4.50"},
    {"sku": "tea-002", "name": "Black tea", "price": "3.90"},
    {"sku": "mug-001", "name": "Mug", "price": "8.00"},
]


@change(id="seed-products", author="catalog-team")
class SeedProducts:
    """Insert the first products, all or none: one TransactWriteItems with the audit records."""

    def apply(self, transaction):
        for product in PRODUCTS:
            transaction.put(TABLE, product, condition="attribute_not_exists(sku)")
