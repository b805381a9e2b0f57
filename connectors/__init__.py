"""Channel connectors (mail, webform, chat, pbx): each imports the core, never the reverse."""
