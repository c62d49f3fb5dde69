"""The embedder the domains call, built on provider clients by composition.

port.py      the `Embedder` protocol, `ClientEmbedder` (one fixed client), `embed_each`
routing.py   `RoutedEmbedder`: the registry's ranking with failover inside a request
batching.py  `CoalescingEmbedder`: concurrent calls become one provider call
parity.py    the registry's embedding task: declared for the space, canary parity
spaces.py    embedding spaces and their reference vectors, in the database
"""
