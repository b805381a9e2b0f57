"""One module per ticket backend; each imports the core (gateway.delivery), never the reverse."""
