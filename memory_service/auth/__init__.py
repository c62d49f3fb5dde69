"""Who is calling: API keys, their scopes and namespaces, and the service's auth mode.

keys.py        the key format: making a key, its lookup prefix and its hash
repository.py  all SQL of the `api_key` table
service.py     making, listing, revoking and checking keys; the caller (`Principal`)
mode.py        `MEMORY_AUTH` (required, off, auto) resolved for an address
"""
