import time

from flamingock_provider.changes import change


@change(id="create-items-collection", author="inventory-team", transactional=False)
class CreateItemsCollection:
    """Create the ``items`` collection. Collection management is not transactional in Couchbase,
    so this change is NON_TX; creating a collection that exists is harmless, so retrying is too.
    """

    def apply(self, bucket, scope, log):
        from couchbase.exceptions import CollectionAlreadyExistsException

        manager = bucket.collections()
        try:
            manager.create_collection(scope.name, "items")
        except CollectionAlreadyExistsException:
            log.info("collection items exists already")
        # The cluster applies the new manifest asynchronously: wait until it lists the collection.
        for _ in range(100):
            scopes = {s.name: {c.name for c in s.collections} for s in manager.get_all_scopes()}
            if "items" in scopes.get(scope.name, set()):
                return
            time.sleep(0.1)
        raise RuntimeError(f"collection {scope.name}.items did not appear within 10 s")
