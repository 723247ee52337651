from flamingock_provider.changes import change

TABLE = "flamingockExampleProducts"


@change(id="create-products-table", author="catalog-team", transactional=False)
class CreateProductsTable:
    """Create the products table. DynamoDB has no transactional DDL, so this runs NON_TX."""

    def apply(self, client, log):
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "sku", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "sku", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.get_waiter("table_exists").wait(
            TableName=TABLE, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
        log.info("table %s created", TABLE)

    def rollback(self, client):
        client.delete_table(TableName=TABLE)
