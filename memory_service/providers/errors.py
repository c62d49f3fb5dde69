"""The errors every provider call raises, embedding and chat alike.

ProviderError
├── ProviderUnavailable        the provider cannot serve now: fail over, or stay pending
│   ├── ProviderConnectError   refused, unreachable, connect timeout
│   ├── ProviderTimeout        no answer within the read timeout
│   ├── ProviderServerError    5xx, or the connection dropped mid-answer
│   ├── ProviderModelNotFound  the server does not serve the configured model (404)
│   ├── ProviderBadResponse    an answer of the wrong shape, count, order or dimension
│   └── EmbedQueueFull         this process queues no more texts for its embedder now
└── ProviderInputError         the provider refused this input (4xx): never retried
"""


class ProviderError(Exception):
    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider


class ProviderUnavailable(ProviderError):
    pass


class ProviderConnectError(ProviderUnavailable):
    pass


class ProviderTimeout(ProviderUnavailable):
    pass


class ProviderServerError(ProviderUnavailable):
    pass


class ProviderModelNotFound(ProviderUnavailable):
    pass


class ProviderBadResponse(ProviderUnavailable):
    pass


class EmbedQueueFull(ProviderUnavailable):
    """More texts wait for the embedder in this process than it queues (the coalescer's
    bound): not the provider's failure, and never counted against it. Stores stay pending;
    searches answer 503 `overloaded`."""


class ProviderInputError(ProviderError):
    """`status` is the provider's own 4xx, relayed by the OpenAI-compatible gateway."""

    def __init__(
        self, provider: str, message: str, index: int | None = None, status: int = 400
    ) -> None:
        super().__init__(provider, message)
        self.index = index
        self.status = status
