from flamingock_provider.changes import change

TABLE = "flamingockExampleProducts"


@change(id="price-in-cents", author="catalog-team")
class PriceInCents:
    """Replace each product's decimal ``price`` string by an integer ``priceCents``.

    Reads with the client, writes through the transaction: every product is converted, with the
    change's APPLIED record, in one atomic commit (DynamoDB allows 100 operations in one).
    """

    def apply(self, client, transaction):
        items = client.scan(TableName=TABLE, ConsistentRead=True)["Items"]
        for item in items:
            cents = round(float(item["price"]["S"]) * 100)
            transaction.update(
                TABLE,
                {"sku": item["sku"]["S"]},
                "SET priceCents = :cents REMOVE price",
                condition="attribute_exists(price)",
                values={":cents": cents},
            )
