"""The test suite (a regular package, so that `tests` here wins over the `tests` packages some libraries ship)."""
