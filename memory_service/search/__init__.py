"""Search over memories and document chunks: vector, keyword (full text) and hybrid (RRF)."""
