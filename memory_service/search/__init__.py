"""Search over memories and document chunks: vector, keyword (BM25) and hybrid (RRF)."""
