"""A small labelled set for ranking quality: memories, document texts and queries with the
ids of what each query should find. Half the queries are paraphrases (meaning, no shared
identifier: vector search's strength), half name exact identifiers or rare terms (keyword
search's strength); hybrid search should serve both."""

MEMORIES: dict[str, str] = {
    "m-diet": "The user is vegetarian and avoids mushrooms.",
    "m-kid": "The user's daughter is called Emma and she is seven.",
    "m-standup": "The team's standup meeting starts at 9:30 every weekday.",
    "m-marathon": "The user ran a marathon in Berlin last September.",
    "m-err": "Deploy of the billing node failed with ERR-4471-XQ after the upgrade.",
    "m-sku": "Customer asked to swap order item ZX-9042-B for the larger size.",
    "m-err-other": "The auth service logged error ERR-1190-KP during the login storm.",
    # Near the identifier queries in meaning, sharing none of their terms: what the
    # all-MiniLM-L6-v2 vectors rank above "m-err" for the query "ERR-4471-XQ".
    "m-err-near": "Error code E4471X appeared in the logs.",
    "m-err-auth": "Error 4417: the auth token expired.",
}

# title -> text; each text is short enough to be one chunk.
DOCUMENTS: dict[str, str] = {
    "d-pets": "Pepper the dog needs her heartworm pill on the first day of every month.",
    "d-taxes": "Quarterly estimated taxes are due on the fifteenth of April, June and September.",
    "d-vpn": "To reach the staging cluster, connect the VPN profile KX-77-DELTA first.",
    "d-db": "The production database runs PostgreSQL 17 on three replicas behind PgBouncer.",
    "d-sku": "Warehouse note: item ZX-9042-B ships from the Leipzig depot only.",
}

QUERIES: list[tuple[str, set[str]]] = [
    ("what food does the user not eat?", {"m-diet"}),
    ("how old is the kid?", {"m-kid"}),
    ("pet medication schedule", {"d-pets"}),
    ("when is the daily team sync?", {"m-standup"}),
    ("ERR-4471-XQ", {"m-err"}),
    ("ZX-9042-B", {"m-sku", "d-sku"}),
    ("KX-77-DELTA", {"d-vpn"}),
    ("PgBouncer replicas", {"d-db"}),
]
