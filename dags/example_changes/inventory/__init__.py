"""Example change units on a Couchbase bucket: an inventory, key-value operations only."""
