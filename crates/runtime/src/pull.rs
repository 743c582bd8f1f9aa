//! Pulling an image into the cache and a root filesystem (filled in below).
