from flamingock_provider.changes import change


@change(id="seed-products", author="catalog-team", target_system="catalog-db")
class SeedProducts:
    """Insert the first products; transactional, so they all land or none do.

    Every operation passes ``session=session``: that is what puts it in the transaction.
    """

    def apply(self, db, session):
        db.products.insert_many(
            [
                {"sku": "TEA-001", "name": "Green tea", "price_cents": 450},
                {"sku": "TEA-002", "name": "Black tea", "price_cents": 400},
                {"sku": "CUP-001", "name": "Tea cup", "price_cents": 1200},
            ],
            session=session,
        )
