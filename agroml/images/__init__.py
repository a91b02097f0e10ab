"""Images: the content-addressed cache, downloads (hosts, size cap, concurrency) and pixel decoding."""
