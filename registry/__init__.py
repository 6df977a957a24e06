"""corral's model registry: names, the blob store, manifests, the catalog, sources, pull.

errors.py      CorralError and its kinds (one-line messages for users)
names.py       ModelName: [host/][namespace/]model[:tag], validated, lowercased
blobs.py       BlobStore: blobs/sha256-<hex>, atomic, verified, pinned, collected
manifest.py    Manifest: the YAML record of an installed model
store.py       Store: list / resolve / delete / copy / commit over a home folder
catalog.py     Recipe and Catalog: how to obtain a model by name (Modelfiles/)
sources/       where files come from: local paths, pypi://, pypi-parts://, hf://, https://
pull.py        pull(): name -> recipe or source -> blob -> manifest, with progress
modelfile.py   Modelfile and the checks of its fields (modelfile_parse.py reads YAML or
               Ollama's classic syntax, modelfile_classic.py; modelfile_render.py writes both)
create.py      create(): Modelfile -> base (installed, pulled, fetched, uploaded) ->
               [quantize] -> manifest with provenance, with progress
"""
