"""The email channel: SMTP/LMTP intake, parsing, (later) IMAP and outbound mail."""
