from sqlalchemy import text

from flamingock_provider.changes import change


@change(id="index-orders-by-customer", author="data-team")
class IndexOrdersByCustomer:
    """Index orders by customer for the account page."""

    def apply(self, connection):
        connection.execute(text("CREATE INDEX ix_orders_customer ON orders (customer)"))
