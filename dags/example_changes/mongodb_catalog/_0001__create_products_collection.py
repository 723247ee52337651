from flamingock_provider.changes import Recovery, change


@change(
    id="create-products-collection",
    author="catalog-team",
    target_system="catalog-db",
    transactional=False,
    recovery=Recovery.ALWAYS_RETRY,
)
class CreateProductsCollection:
    """Create the products collection and its unique SKU index.

    Collection and index creation are kept out of a transaction (older servers refuse them
    there); both steps are idempotent, so the change is safe to retry.
    """

    def apply(self, db, log):
        if "products" not in db.list_collection_names(filter={"name": "products"}):
            db.create_collection("products")
        db.products.create_index("sku", unique=True, name="products_sku")
        log.info("products collection ready")

    def rollback(self, db):
        db.drop_collection("products")
