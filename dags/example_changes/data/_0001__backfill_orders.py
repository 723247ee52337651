from sqlalchemy import text

from flamingock_provider.changes import change

ORDERS = [
    (1, "ada", 1250, "paid"),
    (2, "grace", 990, "new"),
    (3, "ada", 4200, "shipped"),
]


@change(id="backfill-orders", author="data-team")
class BackfillOrders:
    """Load the orders that predate the new system, all or nothing."""

    def apply(self, connection, log):
        connection.execute(
            text("INSERT INTO orders (id, customer, amount_cents, status) VALUES (:i, :c, :a, :s)"),
            [{"i": i, "c": c, "a": a, "s": s} for i, c, a, s in ORDERS],
        )
        log.info("backfilled %d orders", len(ORDERS))
