"""KV-cache awareness: block hashing, KV-event decoding, the block index and its ZMQ subscriber."""
