from flamingock_provider.changes import change

ITEMS = {
    "item::1": {"name": "kettle", "price": 24.5, "stock": 12},
    "item::2": {"name": "teapot", "price": 31.0, "stock": 4},
    "item::3": {"name": "mug", "price": 6.25, "stock": 80},
}


@change(id="seed-items", author="inventory-team")
class SeedItems:
    """Insert the first items in one ACID transaction: all of them, or none."""

    def apply(self, transaction, scope, log):
        items = scope.collection("items")
        for key, item in ITEMS.items():
            transaction.insert(items, key, item)
        log.info("seeded %d items", len(ITEMS))
