"""scorer: a black-box sandboxed scoring service for code competitions."""

__version__ = "0.1.0"
