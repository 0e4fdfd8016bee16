"""The Redis contract (WIRE.md): key names, entry encoding, the Lua scripts.

``keys`` builds every key string, ``wire`` encodes and decodes every field
that travels through Redis, ``scripts`` loads the atomic operations from
``backstage/lua/``. Pure or nearly so; used by producers, the worker and the
operator's side alike.
"""
