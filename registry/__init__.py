"""corral's model registry: names, the blob store, manifests, the catalog, sources, pull.

errors.py      CorralError and its kinds (one-line messages for users)
names.py       ModelName: [host/][namespace/]model[:tag], validated, lowercased
blobs.py       BlobStore: blobs/sha256-<hex>, atomic, verified, pinned, collected
manifest.py    Manifest: the YAML record of an installed model
store.py       Store: list / resolve / delete / copy / commit over a home folder
catalog.py     Recipe and Catalog: how to obtain a model by name (Modelfiles/)
sources/       where files come from: local paths, pypi://, hf://
pull.py        pull(): name -> recipe or source -> blob -> manifest, with progress
"""
