"""The demo application's request handlers, one module per area."""
