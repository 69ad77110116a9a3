"""Dataset versions in a registry: the manifest, the storage (local disk or GCS), the versions store,
fetching a verified copy, reading a split of a version, and the data errors.

Dependency order inside the package (no module imports one after it): errors, storage -> manifest ->
splits, store -> fetch. It imports no other data package (`cybulde.text`, `cybulde.preparation`,
`cybulde.loading` import it).
"""
