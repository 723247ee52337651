from flamingock_provider.changes import change


@change(id="add-currency", author="catalog-team", target_system="catalog-db")
class AddCurrency:
    """Give every product a currency, in the same transaction as its audit record."""

    def apply(self, db, session):
        db.products.update_many(
            {"currency": {"$exists": False}}, {"$set": {"currency": "EUR"}}, session=session
        )
