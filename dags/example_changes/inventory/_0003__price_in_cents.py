from flamingock_provider.changes import change

KEYS = ("item::1", "item::2", "item::3")


@change(id="price-in-cents", author="inventory-team")
class PriceInCents:
    """Store prices as integer cents. Keys are known, so no query (and no index) is needed."""

    def apply(self, transaction, scope):
        items = scope.collection("items")
        for key in KEYS:
            current = transaction.get(items, key)
            item = current.content_as[dict]
            item["priceCents"] = round(item.pop("price") * 100)
            transaction.replace(current, item)
