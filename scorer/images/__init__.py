"""Image intake: receive a `docker save` tarball, inspect it before the engine sees it, load it."""
