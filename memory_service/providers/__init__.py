"""Every inference provider, embedding and chat: one layer, importing `core` only.

errors.py      the error tree every provider call raises
http.py        the HTTP clients per use, one call, the transport-error and status mapping
config.py      the providers file: spaces, the embedder union and chat, on one HTTP base
embedding.py   the embedding client interface; openai.py, ollama.py, local.py implement it
chat.py        the chat client (ollama_chat.py: Ollama's native /api/chat)
tokenizer.py   token counting from a model's tokenizer files
breaker.py     circuit breakers; scoring.py: health and the score that ranks providers
registry.py    the one provider registry (probes, health, eligibility, ranking, status)
factory.py     the registries' providers, built from the configuration
"""
