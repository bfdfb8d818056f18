"""The storage service: which storages exist and who may mount them."""
