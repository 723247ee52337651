from sqlalchemy import text

from flamingock_provider.changes import Recovery, change


@change(
    id="create-customer-totals",
    author="analytics",
    transactional=False,
    recovery=Recovery.ALWAYS_RETRY,
)
class CreateCustomerTotals:
    """A summary table filled outside a transaction; safe to retry, with a rollback."""

    def apply(self, connection):
        connection.execute(
            text(
                "CREATE TABLE IF NOT EXISTS customer_totals AS "
                "SELECT customer, SUM(amount_cents) AS total_cents FROM orders GROUP BY customer"
            )
        )

    def rollback(self, connection):
        connection.execute(text("DROP TABLE IF EXISTS customer_totals"))
