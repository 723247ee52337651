"""Change units of the DynamoDB example (flamingock_dynamodb_example): a product catalog."""
