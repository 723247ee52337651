from sqlalchemy import text

from flamingock_provider.changes import change


@change(id="create-orders-table", author="data-team")
class CreateOrdersTable:
    """Create the orders table; transactional, so a failure leaves no half-made table."""

    def apply(self, connection, log):
        connection.execute(
            text(
                "CREATE TABLE orders ("
                " id INTEGER PRIMARY KEY,"
                " customer TEXT NOT NULL,"
                " amount_cents INTEGER NOT NULL,"
                " status TEXT NOT NULL DEFAULT 'new')"
            )
        )
        log.info("orders table created")

    def rollback(self, connection):
        connection.execute(text("DROP TABLE IF EXISTS orders"))
